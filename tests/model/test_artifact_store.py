"""Artifact stores against a real local S3-compatible server (moto_server) and a real Redis: publish, fetch,
damaged and half-uploaded versions, retention, and the watcher that must keep serving through all of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recommender.errors import ArtifactError, ArtifactStoreUnavailableError
from recommender.model import LFMRecommender
from recommender.model.artifact_store import (LocalArtifactStore, S3ArtifactStore, artifact_store_from_settings,
                                              parse_store_url)
from recommender.model.artifacts import publish_model
from recommender.serving import ModelHolder, ModelWatcher
from recommender.settings import Settings
from recommender.store.jobs import current_version, publish_version
from recommender.training import Trainer

from tests.helpers import S3Server, seed_store, service_settings, small_world

PREFIX = "models/reco"


@pytest.fixture(scope="module")
def world():
    return small_world()


@pytest.fixture(scope="module")
def model(world):
    return LFMRecommender(no_components=8, random_state=3).fit(world.interactions, world.user_features,
                                                              world.item_features, epochs=3)


@pytest.fixture
def client(s3_server):
    return s3_server.client()


def s3_store(bucket, client, cache: Path, retention: int = 0) -> S3ArtifactStore:
    return S3ArtifactStore(bucket, PREFIX, cache, client, retention)


def keys_in(client, bucket) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def score_table(model: LFMRecommender, world) -> np.ndarray:
    """Every known item's score for a known user, a features-only user and a stranger, stacked."""
    new_user = world.new_users[0]
    rows = world.user_features[world.user_features["user_id"] == new_user]
    feats = {new_user: dict(zip(rows["feature"], rows["weight"]))}
    users = [sorted(set(world.interactions["user_id"]))[0], new_user, "stranger"]
    return np.stack([model.predict_online(u, user_features=feats.get(u)).sort_index().to_numpy() for u in users])


def test_store_urls_and_the_factory(tmp_path, s3_bucket):
    assert parse_store_url("s3://models") == ("models", "")
    assert parse_store_url("s3://my.models-1/a/b/") == ("my.models-1", "a/b")
    for bad in ("s3:/models", "models", "s3://Bad_Bucket/x", "gs://models"):
        with pytest.raises(ValueError):
            parse_store_url(bad)
    assert isinstance(artifact_store_from_settings(Settings(model_dir=str(tmp_path))), LocalArtifactStore)
    store = artifact_store_from_settings(Settings(model_dir=str(tmp_path), model_store=f"s3://{s3_bucket}/{PREFIX}",
                                                  model_retention=3))
    assert isinstance(store, S3ArtifactStore) and store.root == tmp_path and store.retention == 3
    store.check()  # the client built from AWS_ENDPOINT_URL & co. reaches the bucket
    assert store.versions() == []


def test_publish_and_fetch_round_trip_gives_identical_scores(tmp_path, s3_bucket, client, model, world):
    """What a reader on another machine fetches scores exactly as the directory-published model does."""
    files = {"notes.bin": lambda path: Path(path).write_bytes(bytes(range(256)) * 40)}
    extra = {"metrics": {"precision_at_k": 0.123}}
    local = publish_model(model, tmp_path / "dir", extra=extra, extra_files=files)
    # the writer's client comes from the AWS variables, as in the service
    writer = artifact_store_from_settings(Settings(model_dir=str(tmp_path / "writer"),
                                                   model_store=f"s3://{s3_bucket}/{PREFIX}"))
    version = writer.publish(model, extra=extra, extra_files=files)
    assert keys_in(client, s3_bucket) == {f"{PREFIX}/{version}/{name}" for name in ("arrays.npz", "meta.json",
                                                                                     "notes.bin")}
    reader = s3_store(s3_bucket, client, tmp_path / "reader")
    assert reader.versions() == [version]
    assert reader.read_meta(version)["extra"]["metrics"] == {"precision_at_k": 0.123}  # no download needed
    assert not (tmp_path / "reader" / version).exists()
    path = reader.fetch(version)
    assert path == tmp_path / "reader" / version
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "meta.json", "notes.bin"]
    assert [p.name for p in (tmp_path / "reader").iterdir()] == [version]  # no temporary left behind
    fetched = LFMRecommender.load(path)
    from_dir = LFMRecommender.load(tmp_path / "dir" / local)
    np.testing.assert_array_equal(score_table(fetched, world), score_table(from_dir, world))
    np.testing.assert_array_equal(score_table(fetched, world), score_table(model, world))
    assert fetched.recommend("u1", 10) == from_dir.recommend("u1", 10)
    assert reader.fetch(version) == path  # a second fetch is the cached copy
    with pytest.raises(ArtifactError, match="already exists"):
        s3_store(s3_bucket, client, tmp_path / "writer-2").publish(model, version=version)


@pytest.fixture
def served(redis_url, key_prefix, tmp_path, s3_bucket, client, model, world):
    """A seeded Redis, a good version in the bucket, and a watcher (its own cache) serving it."""
    store = seed_store(redis_url, key_prefix, world)
    writer = s3_store(s3_bucket, client, tmp_path / "trainer-cache")
    good = writer.publish(model)
    publish_version(store, good)
    holder = ModelHolder()
    watcher = ModelWatcher(holder, store, s3_store(s3_bucket, client, tmp_path / "app-cache"), interval=0.1)
    watcher.check_once()
    assert holder.snapshot.version == good
    return store, writer, watcher, holder, good


def refused(store, watcher, holder, version, good) -> str:
    """Point at ``version``: the watcher must skip it, keep serving ``good``, and cache nothing of it."""
    publish_version(store, version)
    watcher.check_once()
    assert holder.snapshot.version == good
    assert version in holder.failed_versions
    assert [p.name for p in watcher.model_dir.iterdir()] == [good]  # no copy, no temporary
    watcher.check_once()  # and it is not retried
    assert holder.snapshot.version == good
    return holder.failed_versions[version]


def test_a_corrupt_or_missing_arrays_object_is_refused_and_the_old_model_keeps_serving(served, s3_bucket, client,
                                                                                        model, world):
    store, writer, watcher, holder, good = served
    before = score_table(holder.snapshot.model, world)

    corrupt = writer.publish(model)
    key = writer.key(corrupt, "arrays.npz")
    data = bytearray(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(data))
    assert "fails its checksum" in refused(store, watcher, holder, corrupt, good)

    missing = writer.publish(model)
    client.delete_object(Bucket=s3_bucket, Key=writer.key(missing, "arrays.npz"))
    assert "arrays.npz does not exist" in refused(store, watcher, holder, missing, good)

    np.testing.assert_array_equal(score_table(holder.snapshot.model, world), before)
    fine = writer.publish(model)
    publish_version(store, fine)
    watcher.check_once()
    assert holder.snapshot.version == fine


def test_a_half_uploaded_version_is_never_listed_nor_served(served, s3_bucket, client, model, tmp_path):
    store, writer, watcher, holder, good = served
    local = tmp_path / "half"
    # arrays without meta: an upload that stopped before its last object
    no_meta = publish_model(model, local)
    client.upload_file(str(local / no_meta / "arrays.npz"), s3_bucket, writer.key(no_meta, "arrays.npz"))
    # meta without arrays: objects put out of order by some other tool
    no_arrays = publish_model(model, local)
    client.upload_file(str(local / no_arrays / "meta.json"), s3_bucket, writer.key(no_arrays, "meta.json"))
    assert no_meta not in writer.versions()
    assert "meta.json does not exist" in refused(store, watcher, holder, no_meta, good)
    assert "arrays.npz does not exist" in refused(store, watcher, holder, no_arrays, good)


class FailingOn:
    """A real boto3 client whose upload of one file name fails as a dropped connection would."""

    def __init__(self, client, name: str):
        self._client, self._name = client, name

    def __getattr__(self, attr):
        return getattr(self._client, attr)

    def upload_file(self, filename, bucket, key, **kw):
        if key.endswith("/" + self._name):
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="http://s3.invalid")
        return self._client.upload_file(filename, bucket, key, **kw)


def test_a_publish_that_fails_midway_leaves_nothing_to_fetch(tmp_path, s3_bucket, client, model):
    store = S3ArtifactStore(s3_bucket, PREFIX, tmp_path / "cache", FailingOn(client, "meta.json"))
    with pytest.raises(ArtifactStoreUnavailableError):
        store.publish(model)
    assert keys_in(client, s3_bucket) == set()  # the arrays it had uploaded were taken back
    assert store.versions() == [] and list((tmp_path / "cache").iterdir()) == []


def test_an_unreachable_store_is_retried_not_skipped(served, s3_bucket, client, model, tmp_path):
    store, writer, watcher, holder, good = served
    newer = writer.publish(model)
    publish_version(store, newer)
    dead = S3Server(tmp_path).client(retries={"max_attempts": 1}, connect_timeout=1)  # nothing listens there
    watcher.artifacts.client = dead
    watcher.check_once()
    assert holder.snapshot.version == good and newer not in holder.failed_versions
    assert "fetching" in watcher.last_error
    watcher.artifacts.client = client  # the store is back
    watcher.check_once()
    assert holder.snapshot.version == newer and watcher.last_error is None


def test_retention_prunes_old_versions_but_never_the_serving_one(tmp_path, s3_bucket, client, model):
    writer = s3_store(s3_bucket, client, tmp_path / "trainer-cache", retention=2)
    versions = [writer.publish(model) for _ in range(5)]  # in publish order (ids share a second)
    assert writer.versions() == sorted(versions)
    reader = s3_store(s3_bucket, client, tmp_path / "app-cache", retention=2)
    for version in versions:
        reader.fetch(version)
    # an upload that crashed before these: objects without meta.json
    crashed = publish_model(model, tmp_path / "elsewhere", version="20200101T000000Z-crashed0")
    client.upload_file(str(tmp_path / "elsewhere" / crashed / "arrays.npz"), s3_bucket,
                       writer.key(crashed, "arrays.npz"))
    serving = versions[0]  # the pointer was rolled back to the oldest
    assert writer.prune(protect={versions[-1], serving}) == versions[1:3]
    kept = sorted([serving, *versions[3:]])
    assert writer.versions() == kept
    assert {k.split("/")[-2] for k in keys_in(client, s3_bucket)} == set(kept)  # the crashed upload is gone
    assert LocalArtifactStore(tmp_path / "trainer-cache").versions() == kept
    assert reader.prune_cache(protect={serving}) == versions[1:3]
    assert reader.versions() == kept and LocalArtifactStore(tmp_path / "app-cache").versions() == kept
    assert s3_store(s3_bucket, client, tmp_path / "none", retention=0).prune(protect=()) == []
    local = LocalArtifactStore(tmp_path / "dir", retention=1)
    dirs = [local.publish(model) for _ in range(3)]
    assert local.prune(protect={dirs[0]}) == [dirs[1]] and local.versions() == sorted([dirs[0], dirs[2]])


def test_the_trainer_publishes_to_the_object_store_and_keeps_model_retention(redis_url, key_prefix, tmp_path,
                                                                             s3_bucket, client, world):
    settings = service_settings(redis_url, key_prefix, tmp_path / "trainer-cache", epochs=2,
                                model_store=f"s3://{s3_bucket}/{PREFIX}", model_retention=2)
    store = seed_store(redis_url, key_prefix, world)
    trainer = Trainer(store, settings)
    published = [trainer.train_and_publish(force=True).version for _ in range(3)]
    assert current_version(store) == published[-1]
    reader = s3_store(s3_bucket, client, tmp_path / "app-cache")
    assert reader.versions() == sorted(published[1:])
    assert LocalArtifactStore(tmp_path / "trainer-cache").versions() == sorted(published[1:])
    meta = reader.read_meta(published[-1])
    assert meta["extra"]["version"] == published[-1] and "precision_at_k" in meta["extra"]["metrics"]
    # the gate compares against the serving model's metrics, read from the store
    assert trainer._serving_metrics() == meta["extra"]["metrics"]["precision_at_k"]


def test_unreachable_store_raises_unavailable(tmp_path):
    dead = S3Server(tmp_path).client(retries={"max_attempts": 1}, connect_timeout=1)
    store = S3ArtifactStore("models", "", tmp_path / "cache", dead)
    for call in (store.check, store.versions, lambda: store.fetch("20260101T000000Z-abc"),
                 lambda: store.read_meta("20260101T000000Z-abc")):
        with pytest.raises(ArtifactStoreUnavailableError):
            call()
