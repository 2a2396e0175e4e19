"""The trainer process: ``python -m recommender.trainer`` (loop) or ``--once`` (train and publish now)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from .errors import ArtifactStoreUnavailableError, LockedError
from .model.artifact_store import ArtifactStore, artifact_store_from_settings
from .settings import Settings
from .store import RedisFeatureStore, jobs
from .training import Trainer

log = logging.getLogger("recommender.trainer")


def connect(settings: Settings, wait: float = 120.0) -> RedisFeatureStore:
    """A store with training-sized timeouts, waiting (with backoff) until Redis answers."""
    store = RedisFeatureStore.from_url(settings.redis_url, prefix=settings.redis_prefix, socket_timeout=30.0,
                                       connect_timeout=2.0, max_interactions=settings.max_interactions,
                                       max_weight=settings.max_weight)
    deadline = time.monotonic() + wait
    delay = 0.2
    while not store.ping():
        if time.monotonic() > deadline:
            raise SystemExit(f"Redis at {settings.redis_url} did not answer within {wait:.0f}s")
        log.info("waiting for Redis at %s", settings.redis_url)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    return store


def artifact_store(settings: Settings, wait: float = 120.0) -> ArtifactStore:
    """The artifact store the settings name, waiting (with backoff) until it answers: an object store
    started beside the trainer (docker compose) may come up after it."""
    artifacts = artifact_store_from_settings(settings)
    deadline = time.monotonic() + wait
    delay = 0.2
    while True:
        try:
            artifacts.check()
            return artifacts
        except ArtifactStoreUnavailableError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"the artifact store did not answer within {wait:.0f}s: {exc}") from None
            log.info("waiting for the artifact store %s", artifacts.location)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def main(argv: list[str] | None = None) -> int:
    """Run the trainer loop until SIGINT/SIGTERM, or one forced training with --once."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="train and publish once (forced), then exit")
    parser.add_argument("--if-none", action="store_true", help="with --once: only if no model is published yet")
    parser.add_argument("--init-demo", action="store_true",
                        help="load the demo data if the store is empty and publish a first model if none, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s trainer %(levelname)s %(message)s")
    settings = Settings.from_env()
    store = connect(settings)
    artifacts = artifact_store(settings)
    trainer = Trainer(store, settings, artifacts=artifacts)
    if args.init_demo:
        from .bootstrap import ensure_demo_data, ensure_model

        ensure_demo_data(store)
        result = ensure_model(store, settings, artifacts=artifacts)
        log.info("init done: %s", f"published {result.version}" if result else "a model was already published")
        return 0
    if args.once:
        if args.if_none and jobs.current_version(store):
            log.info("a model is already published (%s); nothing to do", jobs.current_version(store))
            return 0
        try:
            result = trainer.train_and_publish(force=True, verbose=True)
        except LockedError as exc:
            log.error("%s", exc)
            return 1
        log.info("published %s: %s", result.version, result.metrics)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: trainer._stop.set())
    log.info("trainer waiting for jobs (prefix %s, models in %s)", settings.redis_prefix, artifacts.location)
    try:
        trainer.loop()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
