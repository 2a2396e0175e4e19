"""Per-process resources, created once in the app factory and reached through ``services()``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app

from recommender.breaker import CircuitBreaker, GuardedReads
from recommender.serving import ModelHolder, ModelWatcher
from recommender.settings import Settings
from recommender.store import RedisFeatureStore
from recommender.training import Trainer
from recommender.usercache import UserCache

from . import metrics

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The Redis-backed feature store, the model holder and its watcher, and the optional trainer thread.

    ``users`` answers the request path's user reads: the store, behind a circuit breaker
    (REDIS_BREAKER_SECONDS > 0), behind a Redis-invalidated cache (USER_CACHE_SIZE > 0).
    """

    settings: Settings
    store: RedisFeatureStore
    users: RedisFeatureStore | GuardedReads | UserCache
    holder: ModelHolder
    watcher: ModelWatcher
    trainer: Trainer | None

    @classmethod
    def start(cls, settings: Settings) -> "Services":
        """Connect (lazily: Redis may come up later) and start the background threads."""
        # no idle-connection health check on the request path: against a hung Redis its own retries
        # multiply the timeout (measured 2.3 s instead of ~0.75 s); the call's retries reconnect anyway
        store = RedisFeatureStore.from_url(settings.redis_url, prefix=settings.redis_prefix,
                                           socket_timeout=settings.redis_timeout,
                                           connect_timeout=settings.redis_timeout, health_check_interval=0,
                                           max_interactions=settings.max_interactions)
        reads = store
        if settings.redis_breaker_seconds:  # after a failed read, requests that need Redis degrade at once
            reads = GuardedReads(store, CircuitBreaker(settings.redis_breaker_seconds))
        users = reads
        if settings.user_cache_size:
            users = UserCache(reads, settings.user_cache_size, settings.user_cache_ttl,
                              on_lookup=lambda result: metrics.child(metrics.USER_CACHE, result).inc()).start()
        holder = ModelHolder()
        previous: dict = {"version": None}

        def on_swap(snapshot) -> None:
            metrics.observe_snapshot(previous["version"], snapshot.version, snapshot.model)
            previous["version"] = snapshot.version

        watcher = ModelWatcher(holder, store, settings.model_dir, settings.watch_interval, on_swap=on_swap).start()
        trainer = None
        if settings.trainer_in_app:
            trainer_store = RedisFeatureStore.from_url(settings.redis_url, prefix=settings.redis_prefix,
                                                       socket_timeout=10.0, connect_timeout=2.0)
            trainer = Trainer(trainer_store, settings,
                              on_result=lambda secs, outcome: metrics.RETRAIN_SECONDS.labels(outcome).observe(secs))
            trainer.start()
        return cls(settings, store, users, holder, watcher, trainer)

    def stop(self) -> None:
        """Stop the background threads (tests; gunicorn just exits)."""
        self.watcher.stop()
        if isinstance(self.users, UserCache):
            self.users.stop()
        if self.trainer:
            self.trainer.stop()


def services() -> Services:
    """The current app's Services."""
    return current_app.extensions["reco"]
