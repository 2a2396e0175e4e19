"""Serving state: one immutable snapshot per model version, swapped atomically by a watcher thread.

A request reads ``ModelHolder.snapshot`` once and uses that object throughout, so a swap in the
middle of a request cannot mix two models. The watcher loads new versions and follows the catalogue
off the request path: features of items that changed since training, new items, and which items may be
recommended at all (the catalogue set is the one source of truth: an item the model learned from
interactions but that was never PUT, or was deleted, is never recommended).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ArtifactError, RecommenderError
from .model import LFMRecommender, PreparedItems
from .model.artifact_store import ArtifactStore, LocalArtifactStore
from .store.jobs import current_version

log = logging.getLogger(__name__)
_SERIALS = itertools.count(1)


@dataclass(frozen=True)
class ModelSnapshot:
    """A loaded model, its version, and the catalogue items scored through their current features."""

    model: LFMRecommender
    version: str
    loaded_at: float
    meta: dict
    items: PreparedItems  # new catalogue items and known items whose features changed since training
    item_features: dict = field(repr=False)  # the raw features behind ``items``
    recommendable: np.ndarray = field(repr=False, default=None)  # per known item: in the catalogue now
    # unique per snapshot in this process (a new version or a catalogue refresh): what results computed
    # from it are keyed by (RESULT_CACHE), without holding the snapshot itself
    # (init=False: dataclasses.replace draws a new one too)
    serial: int = field(default_factory=lambda: next(_SERIALS), compare=False, init=False)

    @property
    def data_snapshot_at(self) -> float:
        """When the training data of this model was read (seconds): later interactions are new to it."""
        return float(self.meta.get("extra", {}).get("data_snapshot_at", 0.0))


class ModelHolder:
    """Holds the current ModelSnapshot; swapping is a single reference assignment."""

    def __init__(self) -> None:
        self.snapshot: ModelSnapshot | None = None
        self.swaps = 0
        self.failed_versions: dict[str, str] = {}
        self._lock = threading.Lock()  # serialises writers only; readers never take it

    def swap(self, snapshot: ModelSnapshot) -> None:
        """Make ``snapshot`` current for every request that starts from now on."""
        with self._lock:
            self.snapshot = snapshot
            self.swaps += 1


def load_checked(model_dir: str | Path, version: str) -> LFMRecommender:
    """Load MODEL_DIR/<version> (checksums verified) and make one test prediction before it may serve."""
    model = LFMRecommender.load(Path(model_dir) / version)
    probe_user = model.user_space.ids[0] if model.n_users else "probe"
    top = model.recommend(probe_user, 5)
    if not top or not all(np.isfinite(score) for _, score in top):
        raise ArtifactError(f"model {version} failed its test prediction")
    return model


def build_snapshot(store, model: LFMRecommender, version: str) -> ModelSnapshot:
    """A model's snapshot against the store now: which known items are in the catalogue, and the features of
    catalogue items the model does not know and of known items changed since its training snapshot.

    Raises
    ------
    StoreUnavailableError
        Redis did not answer.
    """
    meta = dict(getattr(model, "artifact_meta", {}))
    since = float(meta.get("extra", {}).get("data_snapshot_at", 0.0))
    catalogue = store.catalogue()
    recommendable = np.fromiter((i in catalogue for i in model.item_space.ids), dtype=bool, count=model.n_items)
    known = model.item_space.id_index
    wanted = {i for i in catalogue if i not in known}
    wanted.update(i for i, _ in store.item_changes_since(since) if i in known)
    wanted_list = sorted(wanted)
    features: dict = {}
    for start in range(0, len(wanted_list), 5000):
        features.update(store.get_item_features(wanted_list[start:start + 5000]))
    return ModelSnapshot(model, version, time.time(), meta,
                         model.index.prepare_items(features, recommendable=recommendable), features, recommendable)


class ModelWatcher:
    """Background thread: follow the published version and item feature changes, swap snapshots.

    ``artifacts`` is where versions are fetched from: an ArtifactStore (a directory, or an object store
    whose versions are downloaded to a local cache by this thread), or a MODEL_DIR path.
    """

    def __init__(self, holder: ModelHolder, store, artifacts: ArtifactStore | str | Path, interval: float = 1.0,
                 on_swap=None, pointer: str | None = None) -> None:
        self.holder = holder
        self.store = store
        self.artifacts = artifacts if isinstance(artifacts, ArtifactStore) else LocalArtifactStore(artifacts)
        self.model_dir = self.artifacts.root
        self.interval = interval
        self.on_swap = on_swap
        self.pointer = pointer  # the A/B variant whose pointer this watcher follows (None: the one model)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._changes_seen_at = 0.0
        self.last_error: str | None = None  # what the last round failed with (GET /ready shows it)
        self.last_check = 0.0

    def start(self) -> "ModelWatcher":
        """Start the thread (daemon) after one synchronous attempt, so a ready model serves at once."""
        self.check_once()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish and wait up to ``timeout`` seconds."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.check_once()

    def check_once(self) -> None:
        """One round: swap in a new version if one is published, else refresh changed items. Never raises."""
        try:
            version = current_version(self.store, self.pointer)
            snap = self.holder.snapshot
            if version and (snap is None or snap.version != version) and version not in self.holder.failed_versions:
                self._load(version)
            elif snap is not None:
                self._refresh_items(snap)
            self.last_error = None
        except RecommenderError as exc:  # Redis or the artifact store down: keep serving what we have, retry
            self.last_error = str(exc)
            log.warning("watcher: a store is unavailable, serving the current model: %s", exc)
        except Exception as exc:  # never let the thread die
            self.last_error = repr(exc)
            log.exception("watcher: unexpected error")
        self.last_check = time.time()

    def _load(self, version: str) -> None:
        """Load and check a version, prepare its item overlay, and swap; a failure is logged and skipped."""
        started = time.monotonic()
        try:
            directory = self.artifacts.fetch(version)  # an object store's version: downloaded and verified here
            model = load_checked(directory.parent, version)
        except (ArtifactError, OSError, ValueError, KeyError) as exc:
            self.holder.failed_versions[version] = str(exc)
            log.error("model %s failed to load and is skipped; the current model keeps serving: %s", version, exc)
            return
        changes_from = time.time()
        snapshot = build_snapshot(self.store, model, version)
        features = snapshot.item_features
        self._changes_seen_at = changes_from
        self.holder.swap(snapshot)
        log.info("serving model %s (%d users, %d items, %d overlay items) after %.2fs", version, model.n_users,
                 model.n_items, len(features), time.monotonic() - started)
        if self.on_swap:
            self.on_swap(snapshot)
        try:
            self.artifacts.prune_cache(protect={version})  # MODEL_RETENTION, in an object store's local cache
        except OSError as exc:
            log.warning("could not prune the model cache %s: %s", self.model_dir, exc)

    def _refresh_items(self, snap: ModelSnapshot) -> None:
        """Re-prepare the overlay and the catalogue mask when items changed (written or deleted) since the
        last look."""
        changed = self.store.item_changes_since(self._changes_seen_at)
        if not changed:
            return
        ids = sorted({i for i, _ in changed})
        fresh = self.store.get_item_features(ids)
        member = self.store.in_catalogue(ids)
        known = snap.model.item_space.id_index
        features = dict(snap.item_features)
        recommendable = snap.recommendable.copy()  # the old snapshot stays as it was for requests using it
        for item in ids:
            pos = known.get(item)
            if pos is not None:
                recommendable[pos] = member[item]
            if item in fresh and (pos is not None or member[item]):
                features[item] = fresh[item]
            else:
                features.pop(item, None)
        items = snap.model.index.prepare_items(features, recommendable=recommendable)
        self.holder.swap(ModelSnapshot(snap.model, snap.version, snap.loaded_at, snap.meta, items, features,
                                       recommendable))
        self._changes_seen_at = max(ts for _, ts in changed)
        log.info("refreshed features of %d changed item(s)", len(ids))
