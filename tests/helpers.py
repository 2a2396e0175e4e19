"""Helpers for end-to-end tests: seed a store, publish a model, run a real gunicorn."""

from __future__ import annotations

import time
from pathlib import Path

from recommender.settings import Settings
from recommender.store import RedisFeatureStore
from recommender.synthetic import World, make_world
from recommender.training import Trainer
from recommender.launch import Service, env_for, start_gunicorn  # noqa: F401 (re-exported for the tests)

TOKEN = "test-admin-token-0123456789"


def seed_store(redis_url: str, prefix: str, world: World) -> RedisFeatureStore:
    """Load a synthetic world into the store under ``prefix``."""
    store = RedisFeatureStore.from_url(redis_url, prefix=prefix, socket_timeout=10, connect_timeout=2)
    store.bulk_load_user_features(world.user_features)
    store.bulk_load_item_features(world.item_features)
    store.bulk_load_interactions(world.interactions)
    return store


def small_world() -> World:
    """A world small enough to train in about a second, whose features predict taste (the end-to-end tests
    check that a new user's features, e.g. ``interest:horror``, steer its answer)."""
    return make_world(n_users=400, n_items=300, mean_interactions=20, seed=5, feature_signal="strong")


def service_settings(redis_url: str, prefix: str, model_dir: Path, **changes) -> Settings:
    """Settings for a fast test service."""
    values = dict(redis_url=redis_url, redis_prefix=prefix, model_dir=str(model_dir), admin_token=TOKEN,
                  epochs=5, no_components=16, watch_interval=0.3)
    values.update(changes)
    return Settings(**values).validated()


def publish_first_model(store: RedisFeatureStore, settings: Settings) -> str:
    """Train and publish a model the way `make run` does."""
    return Trainer(store, settings).train_and_publish(force=True).version


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.2):
    """Poll until predicate() is truthy; return its value or raise AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
