"""In-process checks of the Flask app that need a differently configured service."""

from __future__ import annotations

import pytest

from app import create_app
from recommender.settings import Settings

from tests.helpers import TOKEN, service_settings


@pytest.fixture
def app_without_token(redis_url, key_prefix, tmp_path):
    app = create_app(service_settings(redis_url, key_prefix, tmp_path / "models", admin_token=None))
    yield app
    app.extensions["reco"].stop()


@pytest.mark.parametrize("method, path", [("put", "/users/u1/features"), ("put", "/items/i1/features"),
                                          ("post", "/interactions"), ("post", "/retrain"),
                                          ("get", "/retrain/abc"), ("get", "/retrain")])
def test_admin_endpoints_are_disabled_without_a_token(app_without_token, method, path):
    client = app_without_token.test_client()
    r = getattr(client, method)(path, json={"a": 1}, headers={"Authorization": "Bearer anything-at-all-000"})
    assert r.status_code == 403
    assert r.json["error"]["code"] == "admin_disabled" and "ADMIN_TOKEN" in r.json["error"]["message"]


@pytest.fixture
def app_with_token(redis_url, key_prefix, tmp_path):
    app = create_app(service_settings(redis_url, key_prefix, tmp_path / "models"))
    yield app
    app.extensions["reco"].stop()


def test_retrain_history_lists_the_submitted_jobs_newest_first_to_admins_only(app_with_token):
    client = app_with_token.test_client()
    admin = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/retrain").status_code == 401
    assert client.get("/retrain", headers={"Authorization": "Bearer wrong-token-00000000"}).status_code == 401
    assert client.get("/retrain", headers=admin).json == {"jobs": []}
    store = app_with_token.extensions["reco"].store
    submitted = []
    for _ in range(3):  # no trainer runs here: mark each one finished so that the next trigger is a new job
        job_id = client.post("/retrain", headers=admin).json["job_id"]
        store.client.hset(store.keys.job(job_id), "status", "succeeded")
        submitted.append(job_id)
    listed = client.get("/retrain", headers=admin).json["jobs"]
    assert [j["job_id"] for j in listed] == submitted[::-1]
    assert all(j["status"] == "succeeded" and "created_at" in j for j in listed)
    assert [j["job_id"] for j in client.get("/retrain?limit=1", headers=admin).json["jobs"]] == submitted[-1:]
    for bad in ("0", "101", "ten", "-3"):
        r = client.get(f"/retrain?limit={bad}", headers=admin)
        assert r.status_code == 400 and r.json["error"]["code"] == "invalid_parameter", (bad, r.json)


def test_no_model_yet_is_a_503_not_a_crash(app_without_token):
    client = app_without_token.test_client()
    r = client.get("/recommend/u1")
    assert r.status_code == 503 and r.json["error"]["code"] == "no_model"
    assert client.get("/ready").status_code == 503
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("env, message", [
    ({"MAX_N": "0"}, "MAX_N"),
    ({"REDIS_URL": "http://nope"}, "REDIS_URL"),
    ({"REDIS_URL": "redis+cluster://"}, "REDIS_URL"),
    ({"REDIS_URL": "redis+cluster://node-a:6379,node-b"}, "host:port"),
    ({"REDIS_URL": "redis+cluster://node-a:6379/2"}, "database 0"),
    ({"REDIS_URL": "redis+cluster://node-a:99999"}, "host:port"),
    ({"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN"),
    ({"EPOCHS": "many"}, "EPOCHS"),
    ({"ROW_NORM": "l2"}, "ROW_NORM"),
    ({"MAX_INTERACTIONS": "-5"}, "MAX_INTERACTIONS"),
    ({"IDEMPOTENCY_TTL": "0"}, "IDEMPOTENCY_TTL"),
    ({"ANN_TARGET_RECALL": "1.5"}, "ANN_TARGET_RECALL"),
])
def test_bad_settings_stop_the_start_with_a_clear_message(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize("url, nodes, options", [
    ("redis+cluster://10.0.0.1:6379", [("10.0.0.1", 6379)], {}),
    ("redis+cluster://a:7000,b:7001, c:7002/0", [("a", 7000), ("b", 7001), ("c", 7002)], {}),
    ("rediss+cluster://user:p%40ss@[::1]:7000", [("::1", 7000)], {"username": "user", "password": "p@ss", "ssl": True}),
])
def test_cluster_urls_are_accepted_and_name_their_nodes(url, nodes, options):
    from recommender.store.connection import ClusterClient, connect, parse_cluster_url

    assert Settings.from_env({"REDIS_URL": url}).redis_url == url
    assert parse_cluster_url(url) == (nodes, options)
    client = connect(url)  # built lazily: no node is contacted here
    assert isinstance(client, ClusterClient) and client.nodes == nodes and not client.built
    assert client.connection_kwargs["decode_responses"] is True


def test_settings_from_environment():
    s = Settings.from_env({"MAX_N": "50", "TRAINER_IN_APP": "true", "ADMIN_TOKEN": "", "RANDOM_STATE": "7"})
    assert s.max_n == 50 and s.trainer_in_app is True and s.admin_token is None and s.random_state == 7


def test_the_app_store_trims_the_interaction_log_to_max_interactions(redis_url, key_prefix, tmp_path):
    settings = Settings.from_env({"REDIS_URL": redis_url, "REDIS_PREFIX": key_prefix, "MAX_INTERACTIONS": "120",
                                  "MODEL_DIR": str(tmp_path), "ADMIN_TOKEN": "t" * 20})
    app = create_app(settings)
    try:
        client = app.test_client()
        for start in range(0, 1000, 100):
            r = client.post("/interactions", headers={"Authorization": "Bearer " + "t" * 20},
                            json=[{"user_id": "u", "item_id": f"i{k}"} for k in range(start, start + 100)])
            assert r.status_code == 200, r.get_json()
        store = app.extensions["reco"].store
        assert store.counts()["interactions"] == 8  # ceil(120 / 16) in the one partition user u writes to
    finally:
        app.extensions["reco"].stop()
