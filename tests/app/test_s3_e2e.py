"""Artifacts in an object store end to end: a local S3 server (moto_server), real Redis, real gunicorn (2 workers).

MODEL_STORE points every process at the bucket; each MODEL_DIR is only a cache. The first model is
published by a trainer with its own cache, so the service starts with an empty cache and must download it;
retrains run in the app (TRAINER_IN_APP) and publish to the bucket, both workers swap, and MODEL_RETENTION
prunes the bucket and the cache.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis
import requests

from recommender.model import LFMRecommender
from recommender.model.artifact_store import LocalArtifactStore, S3ArtifactStore
from recommender.store.jobs import current_version
from tests.helpers import TOKEN, publish_first_model, seed_store, service_settings, small_world, start_gunicorn, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREFIX = "reco/models"


@pytest.fixture(scope="module")
def world():
    return small_world()


@pytest.fixture(scope="module")
def env(redis_url, tmp_path_factory, world, s3_server):
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    tmp = tmp_path_factory.mktemp("s3e2e")
    bucket = s3_server.new_bucket()
    aws = {**os.environ, **s3_server.env}
    settings = service_settings(redis_url, prefix, tmp / "app-cache", trainer_in_app=True, watch_interval=0.2,
                                model_store=f"s3://{bucket}/{PREFIX}", model_retention=2)
    store = seed_store(redis_url, prefix, world)
    with pytest.MonkeyPatch.context() as patch:  # the trainer in this process reads the AWS variables too
        for name, value in s3_server.env.items():
            patch.setenv(name, value)
        version = publish_first_model(store, settings.with_(model_dir=str(tmp / "trainer-cache")))
    assert not (tmp / "app-cache").exists()
    service = start_gunicorn(settings, tmp, workers=2, env=aws)
    bucket_store = S3ArtifactStore(bucket, PREFIX, tmp / "reader-cache", s3_server.client())
    yield type("Env", (), dict(base=service.base, store=store, settings=settings, version=version, tmp=tmp,
                               bucket=bucket_store, service=service))
    service.stop()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


def get(env, path, **kw):
    return requests.get(env.base + path, timeout=10, **kw)


def served_versions(env, tries: int = 12) -> set[str]:
    """The versions answering /model over fresh connections (both workers answer some of them)."""
    return {get(env, "/model", headers={"Connection": "close"}).json()["version"] for _ in range(tries)}


def retrain(env) -> str:
    r = requests.post(env.base + "/retrain", json={"force": True}, headers=AUTH, timeout=10)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = wait_for(lambda: (lambda j: j if j["status"] in ("succeeded", "failed") else None)(
        get(env, f"/retrain/{job_id}", headers=AUTH).json()), timeout=90)
    assert job["status"] == "succeeded", job
    wait_for(lambda: served_versions(env) == {job["version"]}, timeout=20)
    return job["version"]


def assert_scores_match_the_bucket(env, version: str) -> None:
    """/recommend equals LFMRecommender.recommend on the version as fetched from the bucket by a third party."""
    model = LFMRecommender.load(env.bucket.fetch(version))
    user = model.user_space.ids[7]
    feats, seen, negative = env.store.get_user(user)
    candidates = list(model.item_space.ids[:40])
    expected = model.recommend(user, 10, user_features=feats, exclude=seen | negative, item_ids=candidates)
    for _ in range(6):  # both workers
        body = get(env, f"/recommend/{user}?n=10&items={','.join(candidates)}",
                   headers={"Connection": "close"}).json()
        assert body["model_version"] == version and body["degraded"] is False, body
        assert [i["item_id"] for i in body["items"]] == [i for i, _ in expected]
        assert [i["score"] for i in body["items"]] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_workers_start_from_the_bucket_with_an_empty_cache(env):
    assert served_versions(env) == {env.version}
    # the two workers raced to download it into the shared cache: one complete copy, no temporaries left
    assert sorted(p.name for p in (env.tmp / "app-cache").iterdir()) == [env.version]
    assert_scores_match_the_bucket(env, env.version)


def test_a_retrain_publishes_to_the_bucket_both_workers_swap_and_retention_prunes(env):
    second = retrain(env)
    third = retrain(env)
    assert current_version(env.store) == third
    assert env.bucket.versions() == sorted([second, third])  # MODEL_RETENTION=2: the first is gone
    assert_scores_match_the_bucket(env, third)
    cache = LocalArtifactStore(env.tmp / "app-cache")
    wait_for(lambda: cache.versions() == sorted([second, third]), timeout=10)
    assert not [p for p in (env.tmp / "app-cache").iterdir() if p.name.startswith(".")]
    ready = requests.get(env.base + "/ready", timeout=10)
    assert ready.status_code == 200, ready.text
