"""Property-based fuzzing of the HTTP API from its own OpenAPI document: no input may cause a 5xx."""

from __future__ import annotations

import uuid

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from app import create_app

from tests.helpers import TOKEN, publish_first_model, seed_store, service_settings, small_world


@pytest.fixture(scope="module")
def fuzz_app(redis_url, tmp_path_factory):
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    settings_ = service_settings(redis_url, prefix, tmp_path_factory.mktemp("fuzz") / "models")
    store = seed_store(redis_url, prefix, small_world())
    publish_first_model(store, settings_)
    app = create_app(settings_)
    yield app
    app.extensions["reco"].stop()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_causes_a_server_error(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])
