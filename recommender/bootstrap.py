"""First-run setup shared by `make run` and the compose `init` service: demo data and a first model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import ArtifactError
from .model.artifact_store import ArtifactStore, artifact_store_from_settings
from .store.jobs import current_version
from .online import pointer_of
from .store.migrate import migrate_legacy
from .settings import Settings
from .synthetic import make_world
from .training import Trainer, TrainResult

log = logging.getLogger(__name__)


def ensure_layout(store) -> dict[str, int]:
    """Move a store written by version 0.6 (untagged keys) to the tagged layout; a no-op otherwise (a few
    EXISTS). Returns what moved (recommender.store.migrate)."""
    return migrate_legacy(store)


def ensure_demo_data(store, examples_path: Path | None = None, *, n_users: int = 3000, n_items: int = 2000,
                     seed: int = 42) -> dict | None:
    """Load the synthetic demo world when the store is empty (after moving a 0.6 store to the tagged layout);
    return example ids (None if not loaded)."""
    ensure_layout(store)
    if not store.is_empty():
        return None
    log.info("the store is empty: loading demo data (%d users, %d items)", n_users, n_items)
    world = make_world(n_users=n_users, n_items=n_items, seed=seed)
    store.bulk_load_user_features(world.user_features, progress=True)
    store.bulk_load_item_features(world.item_features, progress=True)
    store.bulk_load_interactions(world.interactions, progress=True)
    known = sorted(set(world.interactions["user_id"]), key=lambda u: int(u[1:]))
    examples = {"known_user": known[0], "new_user": world.new_users[0], "new_item": world.new_items[0]}
    if examples_path is not None:
        examples_path.parent.mkdir(parents=True, exist_ok=True)
        examples_path.write_text(json.dumps(examples))
    return examples


def ensure_model(store, settings: Settings, *, verbose: bool = True,
                 artifacts: ArtifactStore | None = None) -> TrainResult | None:
    """Train and publish a first model unless a readable one is already published.

    ``artifacts`` defaults to the store the settings name. Raises ArtifactStoreUnavailableError when an
    object store cannot be reached (nothing is trained then).
    """
    artifacts = artifacts if artifacts is not None else artifact_store_from_settings(settings)
    missing = []
    for variant in settings.variant_list:  # every A/B variant needs its model
        version = current_version(store, pointer_of(variant))
        try:
            if not version:
                raise ArtifactError("nothing is published")
            artifacts.read_meta(version)
        except ArtifactError as exc:
            missing.append(f"{variant.name}: {exc}")
    if not missing:
        return None
    log.info("no readable published model (%s): training", "; ".join(missing))
    return Trainer(store, settings, artifacts=artifacts).train_and_publish(force=True, verbose=verbose)
