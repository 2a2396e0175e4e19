"""End to end: a real gunicorn (2 workers), real HTTP, a real Redis: a single one and a Redis Cluster."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import requests
from prometheus_client import CONTENT_TYPE_LATEST

from recommender.model import LFMRecommender
from recommender.store.jobs import current_version

from tests.helpers import (TOKEN, both_redis_url, delete_prefix, log_length, publish_first_model, seed_store,
                           small_world, start_gunicorn, service_settings, wait_for)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
redis_url = both_redis_url()


@pytest.fixture(scope="module")
def world():
    return small_world()


@pytest.fixture(scope="module")
def env(redis_url, tmp_path_factory, world):
    import uuid

    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    tmp = tmp_path_factory.mktemp("svc")
    settings = service_settings(redis_url, prefix, tmp / "models", trainer_in_app=True)
    store = seed_store(redis_url, prefix, world)
    version = publish_first_model(store, settings)
    service = start_gunicorn(settings, tmp, workers=2)
    yield type("Env", (), dict(base=service.base, store=store, settings=settings, version=version,
                               service=service))
    service.stop()
    delete_prefix(redis_url, prefix)


def get(env, path, **kw):
    return requests.get(env.base + path, timeout=5, **kw)


def known_user(world):
    return sorted(set(world.interactions["user_id"]), key=lambda u: int(u[1:]))[0]


def test_known_user_gets_personalized_items_without_seen_ones(env, world):
    user = known_user(world)
    r = get(env, f"/recommend/{user}?n=7")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["strategy"] == "personalized" and body["user_id"] == user
    assert body["model_version"] == env.version and body["degraded"] is False
    assert len(body["items"]) == 7
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    seen = set(world.interactions.loc[world.interactions["user_id"] == user, "item_id"])
    assert not seen & {i["item_id"] for i in body["items"]}
    with_seen = get(env, f"/recommend/{user}?n=50&exclude_seen=false").json()
    assert seen & {i["item_id"] for i in with_seen["items"]}, "a user's top 50 should include something seen"


def test_scores_match_the_published_model(env, world):
    """The HTTP answer equals LFMRecommender.recommend on the published artifact with the Redis features."""
    user = known_user(world)
    model = LFMRecommender.load(f"{env.settings.model_dir}/{env.version}")
    feats, seen, _ = env.store.get_user(user)
    candidates = ["i1", "i2", "i3", "i4", "i5"]
    new = {i: f for i, f in env.store.get_item_features(candidates).items() if i not in model.iid_map.index}
    expected = model.recommend(user, 5, user_features=feats, exclude=seen, item_ids=candidates, item_features=new)
    body = get(env, f"/recommend/{user}?n=5&items=i1,i2,i3,i4,i5").json()
    assert body["degraded"] is False, body
    got = body["items"]
    assert [g["item_id"] for g in got] == [i for i, _ in expected]
    assert [g["score"] for g in got] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_new_user_with_features_differs_from_popular(env, world):
    popular = get(env, "/recommend/nobody-at-all?n=10").json()
    assert popular["strategy"] == "popular"
    new_user = world.new_users[0]
    body = get(env, f"/recommend/{new_user}?n=10").json()
    assert body["strategy"] == "features"
    assert [i["item_id"] for i in body["items"]] != [i["item_id"] for i in popular["items"]]
    liked = set(world.user_interests[new_user])
    in_taste = sum(world.item_genre.get(i["item_id"]) in liked for i in body["items"])
    assert in_taste >= 5, (liked, body["items"])


def test_user_with_nothing_gets_popular_items(env, world):
    body = get(env, "/recommend/stranger-42?n=5").json()
    assert body["strategy"] == "popular"
    counts = Counter(world.interactions["item_id"])
    top_counts = sorted(counts.values(), reverse=True)[:5]
    assert [counts[i["item_id"]] for i in body["items"]] == top_counts


def test_new_item_is_recommended_after_its_put_without_retrain(env, world):
    user = world.new_users[1]
    liked = world.user_interests[user][0]
    before = get(env, f"/recommend/{user}?items=fresh-item-1,i1").json()
    assert "fresh-item-1" not in {i["item_id"] for i in before["items"]}
    r = requests.put(env.base + "/items/fresh-item-1/features", json={f"genre:{liked}": 1.0, f"tag:{liked}-0": 1.0,
                                                                      f"tag:{liked}-1": 1.0}, headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text

    def visible_in_every_worker():
        answers = [get(env, f"/recommend/{user}?n=100").json() for _ in range(8)]
        return all("fresh-item-1" in {i["item_id"] for i in a["items"]} for a in answers)

    wait_for(visible_in_every_worker, timeout=10)
    restricted = get(env, f"/recommend/{user}?items=fresh-item-1,i1").json()
    assert "fresh-item-1" in {i["item_id"] for i in restricted["items"]}
    assert current_version(env.store) == env.version  # no retrain happened


def test_feature_put_changes_a_users_answer_at_once(env, world):
    user = "late-signup-7"
    assert get(env, f"/recommend/{user}?n=5").json()["strategy"] == "popular"
    r = requests.put(env.base + f"/users/{user}/features", json={"interest:horror": 1, "age:25-34": 1},
                     headers=AUTH, timeout=5)
    assert r.status_code == 200
    body = get(env, f"/recommend/{user}?n=10").json()
    assert body["strategy"] == "features"
    assert sum(world.item_genre.get(i["item_id"]) == "horror" for i in body["items"]) >= 5


def test_cached_users_see_writes_from_outside_the_service_at_once(env, world):
    """Repeat requests are served from each worker's user cache (record and ranking), yet a write made
    straight to Redis by another process (not through the service) shows in the very next answer of every
    worker."""
    user = sorted(set(world.interactions["user_id"]), key=lambda u: int(u[1:]))[3]
    session = requests.Session()

    def top_items():
        return [i["item_id"] for i in session.get(f"{env.base}/recommend/{user}?n=5", timeout=5).json()["items"]]

    def hits(metric="reco_user_cache_lookups_total"):
        text = session.get(env.base + "/metrics", timeout=5).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(metric + '{result="hit"}'))

    before, before_results = hits(), hits("reco_result_cache_lookups_total")
    answers = {tuple(top_items()) for _ in range(20)}
    assert len(answers) == 1
    assert hits() - before >= 10, "repeat requests were not served from the user cache"
    assert hits("reco_result_cache_lookups_total") - before_results >= 10, "rankings were computed every time"
    for _ in range(3):
        top = top_items()[0]
        env.store.add_interactions([{"user_id": user, "item_id": top}])  # now seen: must leave the answer
        stale = [answer for answer in (top_items() for _ in range(20)) if top in answer]
        assert not stale, f"{len(stale)}/20 answers still had {top} after it was marked seen"


@pytest.mark.parametrize("method, path, kwargs, status, code", [
    ("put", "/users/u1/features", {"json": {"a": 1}}, 401, "unauthorized"),
    ("put", "/users/u1/features", {"json": {"a": 1}, "headers": {"Authorization": "Bearer wrong-token-000000"}},
     401, "unauthorized"),
    ("post", "/retrain", {}, 401, "unauthorized"),
    ("get", "/recommend/u1?n=0", {}, 400, "invalid_parameter"),
    ("get", "/recommend/u1?n=1000", {}, 400, "invalid_parameter"),
    ("get", "/recommend/u1?n=ten", {}, 400, "invalid_parameter"),
    ("get", "/recommend/u1?exclude_seen=maybe", {}, 400, "invalid_parameter"),
    ("get", "/recommend/" + "x" * 300, {}, 400, "invalid_id"),
    ("put", "/items/i1/features", {"json": {"genre:drama": "heavy"}, "headers": AUTH}, 400, "invalid_body"),
    ("put", "/items/i1/features", {"data": '{"genre:drama": 1e999}', "headers": AUTH}, 400, "invalid_body"),
    ("put", "/items/i1/features", {"data": '{"genre:drama": NaN}', "headers": AUTH}, 400, "invalid_body"),
    ("put", "/items/i1/features", {"data": "not json", "headers": AUTH}, 400, "invalid_body"),
    ("put", "/items/i1/features", {"json": ["a"], "headers": AUTH}, 400, "invalid_body"),
    ("post", "/interactions", {"json": {"user_id": "u1"}, "headers": AUTH}, 400, "invalid_body"),
    ("post", "/interactions", {"json": [{"user_id": "u1", "item_id": "i1", "weight": "x"}], "headers": AUTH},
     400, "invalid_body"),
    ("post", "/retrain", {"json": {"force": "yes"}, "headers": AUTH}, 400, "invalid_body"),
    ("get", "/retrain/no-such-job", {"headers": AUTH}, 404, "unknown_job"),
    ("get", "/no/such/route", {}, 404, "not_found"),
    ("delete", "/model", {}, 405, "method_not_allowed"),
    ("put", "/items/i1/features", {"data": "x" * 2_000_000, "headers": AUTH}, 413, "request_entity_too_large"),
])
def test_errors_are_json_with_the_right_status(env, method, path, kwargs, status, code):
    r = requests.request(method, env.base + path, timeout=10, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code
    assert "Traceback" not in r.text


def test_rejected_writes_write_nothing(env):
    requests.put(env.base + "/users/careful-user/features", json={"ok": 1, "bad": "x"}, headers=AUTH, timeout=5)
    assert env.store.get_user("careful-user") == (None, set(), set())


def test_what_an_unknown_user_just_did_changes_its_next_answer_in_every_worker(env, world):
    """Fold-in: three interactions posted for a user the model has never seen; its very next request in
    either worker is served by them (strategy "interactions"), toward the items' neighbourhood."""
    user = "fresh-visitor-1"
    before = get(env, f"/recommend/{user}?n=10").json()
    assert before["strategy"] == "popular"
    genre = "horror"
    liked = [i for i, g in sorted(world.item_genre.items()) if g == genre and i in set(world.interactions["item_id"])][:3]
    r = requests.post(env.base + "/interactions", headers=AUTH, timeout=5,
                      json=[{"user_id": user, "item_id": i} for i in liked])
    assert r.status_code == 200
    answers = [get(env, f"/recommend/{user}?n=10", headers={"Connection": "close"}).json() for _ in range(8)]
    assert {a["strategy"] for a in answers} == {"interactions"}
    items = [i["item_id"] for i in answers[0]["items"]]
    assert all([i["item_id"] for i in a["items"]] == items for a in answers)  # every worker, the same answer
    assert not set(liked) & set(items)  # seen items stay out
    in_genre = sum(world.item_genre.get(i) == genre for i in items)
    popular_in_genre = sum(world.item_genre.get(i["item_id"]) == genre for i in before["items"])
    assert in_genre > popular_in_genre, (in_genre, popular_in_genre)


def test_a_known_users_new_interactions_shift_its_answer(env, world):
    user = sorted(set(world.interactions["user_id"]), key=lambda u: int(u[1:]))[5]
    before = [i["item_id"] for i in get(env, f"/recommend/{user}?n=10").json()["items"]]
    genre = "documentary"
    new = [i for i, g in sorted(world.item_genre.items()) if g == genre][:6]
    assert requests.post(env.base + "/interactions", headers=AUTH, timeout=5,
                         json=[{"user_id": user, "item_id": i} for i in new]).status_code == 200
    after = get(env, f"/recommend/{user}?n=10").json()
    items = [i["item_id"] for i in after["items"]]
    if after["strategy"] == "interactions":  # the policy uses them: the answer moves toward their genre
        assert items != before
    assert not set(new) & set(items)  # and they are excluded as seen, whatever the policy


def test_the_session_endpoint_matches_the_library(env, world):
    from recommender.service import SESSION_USER

    model = LFMRecommender.load(f"{env.settings.model_dir}/{current_version(env.store)}")
    recent = ["i10", "i20", {"item_id": "i30", "weight": 2.0}]
    r = requests.post(env.base + "/recommend", json={"recent": recent, "n": 8, "filter": ["genre:drama|genre:comedy"]},
                      timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    catalogue = env.store.catalogue()
    new = {i: f for i, f in env.store.get_item_features(sorted(catalogue - set(model.iid_map.index))).items()}
    expected = model.rank(SESSION_USER, 8, interactions={"i10": 1.0, "i20": 1.0, "i30": 2.0}, item_features=new,
                          exclude={"i10", "i20", "i30"}, filters=[["genre:drama", "genre:comedy"]])
    assert body["strategy"] == "session" and expected.strategy == "interactions"
    assert [i["item_id"] for i in body["items"]] == [i for i, _ in expected.items]
    assert [i["score"] for i in body["items"]] == pytest.approx([s for _, s in expected.items], abs=1e-5)
    for bad in ({"recent": "i1"}, {"recent": ["i1"], "n": 0}, {"recent": [{"item_id": "i1", "weight": -1}]},
                {"recent": ["a,b"]}, {"recent": ["i1"], "surprise": 1}, {"recent": ["i1"] * 101}):
        r = requests.post(env.base + "/recommend", json=bad, timeout=5)
        assert r.status_code == 400 and r.json()["error"]["code"] in ("invalid_body", "invalid_parameter"), bad
    assert env.store.get_user("nobody-wrote-this") == (None, set(), set())  # nothing was written


def test_interactions_post_updates_seen(env, world):
    user = known_user(world)
    r = requests.post(env.base + "/interactions", headers=AUTH, timeout=5,
                      json=[{"user_id": user, "item_id": "i299", "weight": 2.0}])
    assert r.status_code == 200 and r.json()["written"] == 1
    assert "i299" in env.store.get_user(user)[1]
    assert "i299" not in {i["item_id"] for i in get(env, f"/recommend/{user}?n=100").json()["items"]}


def test_interactions_with_an_idempotency_key_are_written_once(env, world):
    user = known_user(world)
    body = [{"user_id": user, "item_id": "i298"}, {"user_id": user, "item_id": "i297", "weight": 3}]
    headers = dict(AUTH, **{"Idempotency-Key": f"e2e-{user}-1"})
    before = log_length(env.store)
    first = requests.post(env.base + "/interactions", headers=headers, json=body, timeout=5)
    assert first.status_code == 200 and first.json() == {"written": 2, "replayed": False}
    assert "Idempotent-Replayed" not in first.headers
    retry = requests.post(env.base + "/interactions", headers=headers, json=body, timeout=5)
    assert retry.status_code == 200 and retry.json() == {"written": 2, "replayed": True}
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert log_length(env.store) == before + 2
    reused = requests.post(env.base + "/interactions", headers=headers, json=body[:1], timeout=5)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
    for bad in ("has space", "x" * 256):
        r = requests.post(env.base + "/interactions", json=body, timeout=5,
                          headers=dict(AUTH, **{"Idempotency-Key": bad}))
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_header", r.text
    assert log_length(env.store) == before + 2


def test_health_ready_model_metrics_openapi(env):
    assert get(env, "/health").json() == {"status": "ok"}
    ready = get(env, "/ready")
    assert ready.status_code == 200 and ready.json()["model_loaded"] is True
    model = get(env, "/model").json()
    assert model["users"] > 0 and model["items"] > 0 and "precision_at_k" in model["metrics"]
    selection = model["metrics"]["selection"]  # what the trainer chose, and how each population measured
    assert selection["chosen"]["row_norm"] == "features" and selection["chosen"]["epochs"] == 5
    assert set(selection["chosen"]["policy"]) >= {"warm", "features", "fresh", "fold_in"}
    assert {"warm_users", "feature_users", "fresh_users", "new_items"} <= set(selection["populations"])
    assert selection["candidates"] and model["policy"] == selection["chosen"]["policy"]
    get(env, "/recommend/u1")
    scraped = get(env, "/metrics")
    text = scraped.text
    assert scraped.headers["Content-Type"] == CONTENT_TYPE_LATEST  # one charset (Flask adds none)
    assert 'reco_http_request_duration_seconds_bucket{endpoint="/recommend/<path:user_id>"' in text
    assert "reco_model_swaps_total" in text and "reco_model_info" in text
    doc = get(env, "/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/recommend/{user_id}" in doc["paths"]


def test_retrain_under_load_swaps_every_worker_with_zero_failures(env):
    """Clients keep requesting while a retrain publishes and every worker swaps; nothing may fail."""
    stop = threading.Event()
    results: list = []
    lock = threading.Lock()

    def client(k: int):
        session = requests.Session()
        while not stop.is_set():
            try:
                r = session.get(env.base + f"/recommend/u{k + 1}?n=10", timeout=5)
                item = (r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text[:200])
            except Exception as exc:  # a refused or reset connection is a failure too
                item = (0, repr(exc))
            with lock:
                results.append(item)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        r = requests.post(env.base + "/retrain", json={"force": True}, headers=AUTH, timeout=5)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        again = requests.post(env.base + "/retrain", headers=AUTH, timeout=5)
        assert again.status_code == 202 and again.json()["job_id"] == job_id  # no second training
        job = wait_for(lambda: (lambda j: j if j["status"] in ("succeeded", "failed") else None)(
            requests.get(env.base + f"/retrain/{job_id}", headers=AUTH, timeout=5).json()), timeout=60)
        assert job["status"] == "succeeded" and job["progress"] == "done", job
        new_version = job["version"]
        assert new_version != env.version

        def all_workers_on_new():
            pids = {}
            for _ in range(20):
                m = requests.get(env.base + "/model", timeout=5, headers={"Connection": "close"}).json()
                pids[m["worker_pid"]] = m["version"]
            return len(pids) == 2 and set(pids.values()) == {new_version}

        wait_for(all_workers_on_new, timeout=15)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failures = [r for r in results if r[0] != 200]
    versions = Counter(v for s, v in results if s == 200)
    assert not failures, failures[:5]
    assert len(results) > 100
    assert versions[env.version] > 0 and versions[new_version] > 0, versions
    env.version = new_version
