"""Helpers for end-to-end tests: seed a store, publish a model, run a real gunicorn or a local S3 server."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from recommender.settings import Settings
from recommender.store import RedisFeatureStore
from recommender.synthetic import World, make_world
from recommender.training import Trainer
from recommender.launch import Service, env_for, http_status, start_gunicorn  # noqa: F401 (re-exported for the tests)
from recommender.localredis import free_port

TOKEN = "test-admin-token-0123456789"


def both_redis_url():
    """A ``redis_url`` fixture for a test module, ``redis_url = both_redis_url()``: every test of the module
    that uses it runs on a single Redis and on a Redis Cluster (ids ``[single]``, ``[cluster]``)."""

    def redis_url(request):
        """The Redis under test: the session's single Redis or its Redis Cluster."""
        return request.getfixturevalue(f"{request.param}_redis_url")

    return pytest.fixture(scope="module", params=["single", "cluster"], name="redis_url")(redis_url)


def delete_prefix(redis_url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (on every master of a cluster); returns how many."""
    from recommender.store.connection import connect, disconnect, primaries
    from recommender.store.keys import glob_escape

    client = connect(redis_url, socket_timeout=10, connect_timeout=2)
    deleted = 0
    try:
        for node in primaries(client):
            keys = list(node.scan_iter(match=glob_escape(prefix) + "*", count=1000))
            for start in range(0, len(keys), 500):
                with node.pipeline(transaction=False) as pipe:  # one key per DEL: they span slots
                    for key in keys[start:start + 500]:
                        pipe.delete(key)
                    deleted += sum(pipe.execute())
    finally:
        disconnect(client)
    return deleted


def all_keys(store, pattern: str | None = None) -> list[str]:
    """Every key under the store's prefix (or matching ``pattern``), from every master, sorted."""
    from recommender.store.connection import primaries

    pattern = pattern or store.keys.all_pattern()
    return sorted({k for node in primaries(store.client) for k in node.scan_iter(match=pattern, count=1000)})


def command_calls(store, command: str) -> int:
    """Times the servers (every master) executed ``command`` (INFO commandstats)."""
    from recommender.store.connection import primaries

    return sum(int(node.info("commandstats").get(f"cmdstat_{command.lower()}", {}).get("calls", 0))
               for node in primaries(store.client))


def log_length(store) -> int:
    """Entries in the interaction log (every partition)."""
    return store.counts()["interactions"]


def log_entries(store) -> list[dict]:
    """The interaction log's entries (every partition), in the snapshot's order (by stream id)."""
    entries = []
    for p, key in enumerate(store.keys.interactions.keys):
        for entry_id, fields in store.client.xrange(key):
            ms, _, seq = entry_id.partition("-")
            entries.append(((int(ms), int(seq), p), fields))
    return [fields for _, fields in sorted(entries, key=lambda e: e[0])]


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
                  epochs=5, row_norm="features", no_components=16, watch_interval=0.3)
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


class S3Server:
    """A local S3-compatible server: moto's ``moto_server`` as a child process on a free port.

    It stands in for S3, MinIO or Ceph (MinIO itself is not installable on these machines); real boto3
    talks HTTP to it. Buckets live in the server's memory and go with it.
    """

    REGION = "us-east-1"

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_dir) / "moto_server.log"
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and the service) at this server."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_DEFAULT_REGION": self.REGION,
                "AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"}

    def start(self, timeout: float = 30.0) -> "S3Server":
        """Start the server and wait until it answers HTTP (RuntimeError otherwise)."""
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                             "-p", str(self.port)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            if http_status(self.url + "/") is not None:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, **config):
        """A boto3 S3 client for this server (``config``: botocore Config arguments, e.g. retries)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.url, region_name=self.REGION, aws_access_key_id="test-key",
            aws_secret_access_key="test-secret", config=Config(**config) if config else None)

    def new_bucket(self) -> str:
        """Create an empty bucket with a fresh name and return the name."""
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name
