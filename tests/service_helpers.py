"""Helpers for end-to-end tests: seed a store, publish a model, run a real gunicorn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from recommender.localredis import free_port
from recommender.settings import Settings
from recommender.store import RedisFeatureStore
from recommender.synthetic import World, make_world
from recommender.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-admin-token-0123456789"


def seed_store(redis_url: str, prefix: str, world: World) -> RedisFeatureStore:
    """Load a synthetic world into the store under ``prefix``."""
    store = RedisFeatureStore.from_url(redis_url, prefix=prefix, socket_timeout=10, connect_timeout=2)
    store.bulk_load_user_features(world.user_features)
    store.bulk_load_item_features(world.item_features)
    store.bulk_load_interactions(world.interactions)
    return store


def small_world() -> World:
    """A world small enough to train in about a second."""
    return make_world(n_users=400, n_items=300, mean_interactions=20, seed=5)


def service_settings(redis_url: str, prefix: str, model_dir: Path, **changes) -> Settings:
    """Settings for a fast test service."""
    values = dict(redis_url=redis_url, redis_prefix=prefix, model_dir=str(model_dir), admin_token=TOKEN,
                  epochs=5, no_components=16, watch_interval=0.3)
    values.update(changes)
    return Settings(**values).validated()


def env_for(settings: Settings, port: int, workers: int = 2, threads: int = 4) -> dict:
    """The environment a gunicorn run of these settings needs."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    for name, var in Settings.ENV.items():
        value = getattr(settings, name)
        if value is not None:
            env[var] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update(PORT=str(port), HOST="127.0.0.1", WORKERS=str(workers), THREADS=str(threads), LOG_LEVEL="warning")
    return env


@dataclass
class Service:
    """A running gunicorn serving the app."""

    process: subprocess.Popen
    base: str
    log_path: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        """What gunicorn wrote (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def start_gunicorn(settings: Settings, log_dir: Path, workers: int = 2, threads: int = 4,
                   wait_ready: bool = True) -> Service:
    """Start gunicorn with the project's config and wait until /ready answers 200."""
    port = free_port()
    log_path = log_dir / f"gunicorn-{port}.log"
    fh = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "app" / "gunicorn_conf.py")],
                               cwd=ROOT, env=env_for(settings, port, workers, threads), stdout=fh,
                               stderr=subprocess.STDOUT, start_new_session=True)
    service = Service(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 60
    path = "/ready" if wait_ready else "/health"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {service.log()}")
        try:
            if requests.get(service.base + path, timeout=1).status_code == 200:
                return service
        except requests.RequestException:
            pass
        time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"gunicorn did not become ready: {service.log()}")


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
