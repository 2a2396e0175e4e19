"""Shared fixtures: a real Redis (REDIS_URL, else a private redis-server on a free port), a real Redis Cluster
(REDIS_CLUSTER_URL, else a private one of 3 masters), a local S3 server.

``redis_url`` is the single Redis unless a module overrides it: ``redis_url = both_redis_url()``
(tests.helpers) runs the module's tests that use it on both.
"""

from __future__ import annotations

import os
import uuid

import pytest

from recommender.localredis import LocalRedis, LocalRedisCluster


@pytest.fixture(scope="session")
def single_redis_url(tmp_path_factory):
    """URL of a real Redis server; a private one is started (and stopped) when REDIS_URL is unset."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster_redis_url(tmp_path_factory):
    """redis+cluster:// URL of a real Redis Cluster; a private one of 3 masters (no replicas) is started
    (and stopped) when REDIS_CLUSTER_URL is unset."""
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_url(single_redis_url):
    """The Redis under test: the single one (modules that run on both override this fixture)."""
    return single_redis_url


@pytest.fixture
def key_prefix(redis_url):
    """A test-only key prefix; every key under it is deleted afterwards (safe on a shared Redis)."""
    from tests.helpers import delete_prefix

    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A local S3-compatible server (moto_server on a free port), started once and stopped at the end."""
    from tests.helpers import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the local S3 server, with the AWS variables pointing at that server for this test."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server.new_bucket()
