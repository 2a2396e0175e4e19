"""Online evaluation pieces: recommendation ids, the impression writer, and A/B variants.

- Every answer gets a ``recommendation_id`` (:func:`new_recommendation_id`): 32 hex characters, the time
  of the answer in milliseconds (12) then 20 random ones. The random part seeds the exploration draw, so
  the random slots of an answer can be reproduced; the time tells attribution whether an unknown id may
  still be in a writer's buffer (:func:`recommendation_age`).
- :class:`ImpressionWriter` takes impressions off the request path: ``add`` appends to a bounded
  in-process buffer (no I/O); a background thread writes whatever is buffered every ``interval`` seconds
  (or at ``batch`` entries), one pipeline and one stream entry per ``batch`` answers (default 100). Each
  answer is serialised by the request thread that adds it, so that a flush holds the interpreter, and so
  the request threads, only to join bytes and send them (serialising in the flush held it ~2 ms at a time;
  recommender.store.impressions.PreparedImpression).
  ``stop`` writes what is left
  (a clean shutdown loses nothing). A crash loses at most what was buffered: ``interval`` seconds of
  answers, never more than ``capacity`` impressions; when Redis is down the buffer keeps the newest
  ``capacity`` and counts what it had to drop (``dropped``).
- :class:`Variant` and :func:`parse_variants`: A/B variants from the VARIANTS setting, and
  :func:`assign_variant`, a stable hash of the user id (same user, same variant, in every process and
  after every restart).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from .store.impressions import Impression, ImpressionLog, PreparedImpression

log = logging.getLogger(__name__)

DEFAULT_VARIANT = "default"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def new_recommendation_id(now: float | None = None) -> str:
    """A new answer's id: 12 hex characters of milliseconds since the epoch, then 20 random ones."""
    millis = int((time.time() if now is None else now) * 1000)
    # 80 random bits from the process's generator (seeded from os.urandom, and again in every forked child):
    # an id must be unique, not secret (attribution checks the user it was given to); os.urandom(10) is a
    # system call per answer, ~10 us of the request path, getrandbits ~0.2 us
    return f"{millis:012x}{random.getrandbits(80):020x}"


def exploration_seed(recommendation_id: str) -> int:
    """The seed of an answer's exploration draw (its id's random part: the draw can be reproduced)."""
    return int(recommendation_id[12:28], 16)


def recommendation_age(recommendation_id: str, now: float | None = None) -> float:
    """Seconds since the answer with this id was given (from the time in its id)."""
    return (time.time() if now is None else now) - int(recommendation_id[:12], 16) / 1000.0


class ImpressionWriter:
    """Writes impressions in batches from a background thread (see the module docstring)."""

    def __init__(self, log_: ImpressionLog, interval: float = 0.5, batch: int = 100, capacity: int = 50_000,
                 on_written: Callable[[int], None] | None = None):
        if interval <= 0 or batch < 1 or capacity < batch:
            raise ValueError("interval must be > 0, batch >= 1 and capacity >= batch")
        self.log = log_
        self.interval = interval
        self.batch = batch
        self._buffer: deque[PreparedImpression] = deque()
        self.capacity = capacity
        self.dropped = 0  # impressions the full buffer pushed out (Redis down)
        self.unserialisable = 0  # answers that could not be serialised (dropped at add)
        self.written = 0
        self.on_written = on_written
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, impression: Impression) -> None:
        """Buffer one impression, serialised here by the calling thread (no I/O: see PreparedImpression); the
        oldest is dropped (and counted) when the buffer is full."""
        try:
            impression = self.log.prepare(impression)
        except Exception:  # noqa: BLE001 - the answer is given; its log entry must not fail the request
            with self._lock:
                self.unserialisable += 1
                count = self.unserialisable
            if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th... (a systematic failure must not flood)
                log.exception("impression %s could not be serialised; dropped (%d so far)",
                              impression.recommendation_id, count)
            return
        with self._lock:
            if len(self._buffer) >= self.capacity:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(impression)
            full = len(self._buffer) >= self.batch
        if full:
            self._wake.set()

    def start(self) -> "ImpressionWriter":
        """Start the background thread (daemon)."""
        self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and write what is left (one last attempt)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()

    def flush(self) -> int:
        """Write everything buffered now; returns how many were written (0 when Redis failed: kept)."""
        with self._lock:
            pending = list(self._buffer)
            self._buffer.clear()
        if not pending:
            return 0
        try:
            for start in range(0, len(pending), self.batch):
                self.log.write(pending[start:start + self.batch])
        except Exception as exc:  # noqa: BLE001 - Redis down: keep them (bounded) and retry later
            with self._lock:
                room = self.capacity - len(self._buffer)
                keep = pending[-room:] if room > 0 else []
                self.dropped += len(pending) - len(keep)
                self._buffer.extendleft(reversed(keep))
            log.warning("impressions not written (kept %d for the next attempt): %s", len(keep), exc)
            return 0
        self.written += len(pending)
        if self.on_written:
            self.on_written(len(pending))
        return len(pending)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()


@dataclass(frozen=True)
class Variant:
    """An A/B variant: its name, share of users, and the settings it overrides (environment names)."""

    name: str
    share: float
    overrides: Mapping[str, str] = field(default_factory=dict)


def parse_variants(raw: str, allowed: Sequence[str]) -> list[Variant]:
    """Variants from VARIANTS (JSON: name -> {"share": s, "settings": {"ENV_NAME": value, ...}}).

    Raises
    ------
    ValueError
        Not JSON of that shape, fewer than two variants, a bad name, shares not positive or not summing to
        1, or an override of a setting that is not in ``allowed``.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"VARIANTS is not JSON: {exc}") from None
    if not isinstance(data, dict) or len(data) < 2:
        raise ValueError('VARIANTS must be a JSON object of two or more variants: {"a": {"share": 0.5}, ...}')
    out = []
    for name, spec in data.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"variant name {name!r} must be 1-32 of a-z, 0-9, _ and -, starting with a letter or digit")
        if not isinstance(spec, dict) or set(spec) - {"share", "settings"}:
            raise ValueError(f'variant {name!r} must be {{"share": number, "settings": {{...}}}}')
        share = spec.get("share")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise ValueError(f"variant {name!r}: share must be a number in (0, 1], got {share!r}")
        overrides = spec.get("settings", {})
        if not isinstance(overrides, dict):
            raise ValueError(f"variant {name!r}: settings must be an object of setting name -> value")
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            raise ValueError(f"variant {name!r}: {unknown} cannot vary per variant (allowed: {', '.join(allowed)})")
        out.append(Variant(name, float(share), {k: str(v).lower() if isinstance(v, bool) else str(v)
                                                 for k, v in overrides.items()}))
    total = sum(v.share for v in out)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"variant shares must sum to 1, they sum to {total:g}")
    return out


def pointer_of(variant: Variant) -> str | None:
    """The model pointer a variant follows (recommender.store.keys.model_pointer): the one model's for the
    default variant, so a service without VARIANTS keeps its single pointer."""
    return None if variant.name == DEFAULT_VARIANT else variant.name


def assign_variant(user_id: str, variants: Sequence[Variant]) -> Variant:
    """The variant of a user: a stable hash of its id in [0, 1) against the cumulative shares."""
    if len(variants) == 1:
        return variants[0]
    point = int(hashlib.sha256(f"variant:{user_id}".encode()).hexdigest()[:13], 16) / float(1 << 52)
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.share
        if point < cumulative:
            return variant
    return variants[-1]
