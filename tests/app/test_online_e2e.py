"""Online evaluation end to end: real gunicorn (2 workers), real Redis, two A/B variants, one exploring."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
import redis
import requests

from recommender.store.impressions import ImpressionLog
from tests.helpers import TOKEN, seed_store, service_settings, small_world, start_gunicorn, wait_for
from recommender.training import Trainer

AUTH = {"Authorization": f"Bearer {TOKEN}"}
VARIANTS = '{"a": {"share": 0.5}, "b": {"share": 0.5, "settings": {"EXPLORATION_RATE": "0.2"}}}'


@pytest.fixture(scope="module")
def env(redis_url, tmp_path_factory):
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    tmp = tmp_path_factory.mktemp("online")
    settings = service_settings(redis_url, prefix, tmp / "models", variants=VARIANTS)
    store = seed_store(redis_url, prefix, small_world())
    result = Trainer(store, settings).train_and_publish(force=True)  # every variant: its own model
    assert set(result.metrics["variants"]) == {"a", "b"}
    service = start_gunicorn(settings, tmp, workers=2)
    env = type("Env", (), dict(base=service.base, store=store, settings=settings, service=service, tmp=tmp))
    yield env
    env.service.stop()  # the one running now: a test restarts it
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


def ask(env, user: str, **params):
    r = requests.get(f"{env.base}/recommend/{user}", params={"n": 10, **params}, timeout=10,
                     headers={"Connection": "close"})  # a new connection each time: both workers answer
    assert r.status_code == 200, r.text
    return r.json()


def test_variants_are_stable_across_workers_and_a_restart_and_listed(env):
    users = [f"u{k}" for k in range(1, 41)] + [f"stranger-{k}" for k in range(20)]
    first = {u: ask(env, u)["variant"] for u in users}
    assert set(first.values()) == {"a", "b"}
    for _ in range(3):
        assert {u: ask(env, u)["variant"] for u in users} == first
    model = requests.get(env.base + "/model", timeout=10).json()
    assert set(model["variants"]) == {"a", "b"} and model["variants"]["b"]["settings"] == {"EXPLORATION_RATE": "0.2"}
    assert model["variants"]["a"]["version"] != model["variants"]["b"]["version"]
    env.service.stop()  # a restart: new processes, same answers
    env.service = start_gunicorn(env.settings, env.tmp, workers=2)
    env.base = env.service.base
    assert {u: ask(env, u)["variant"] for u in users} == first


def test_answers_have_unique_ids_that_reach_the_impression_log(env):
    answers = [ask(env, f"u{k % 60 + 1}") for k in range(120)]
    ids = [a["recommendation_id"] for a in answers]
    assert len(set(ids)) == len(ids)
    log = ImpressionLog(env.store)

    def logged():
        return {r["recommendation_id"]: r for r in log.read()}

    records = wait_for(lambda: (lambda got: got if set(ids) <= set(got) else None)(logged()), timeout=10)
    for answer in answers[:10]:
        record = records[answer["recommendation_id"]]
        assert record["items"] == [[i["item_id"], i["score"]] for i in answer["items"]]
        assert record["variant"] == answer["variant"] and record["strategy"] == answer["strategy"]
        assert record["explored"] == [k for k, i in enumerate(answer["items"]) if i.get("explored")]


def test_exploration_rate_holds_and_explored_items_are_marked(env):
    by_variant: dict = {"a": [0, 0], "b": [0, 0]}
    for k in range(300):
        answer = ask(env, f"u{k % 300 + 1}")
        explored = sum(bool(i.get("explored")) for i in answer["items"])
        by_variant[answer["variant"]][0] += explored
        by_variant[answer["variant"]][1] += len(answer["items"])
    assert by_variant["a"][0] == 0  # only b explores
    rate = by_variant["b"][0] / by_variant["b"][1]
    assert by_variant["b"][1] > 800 and abs(rate - 0.2) < 0.05, by_variant  # ~1,500 slots: 3 sd ~ 0.03


def test_attribution_counts_the_right_position_and_stats_split_by_variant(env):
    since = time.time() - 1
    clicks = Counter()
    answers = {k: ask(env, f"u{k}") for k in range(1, 31)}
    time.sleep(1.0)  # people click after they see: by then the impression writers have flushed (every 0.5 s)
    for k, answer in answers.items():
        item = answer["items"][2]["item_id"]  # the third position
        r = requests.post(env.base + "/interactions", headers=AUTH, timeout=10, json=[
            {"user_id": f"u{k}", "item_id": item, "recommendation_id": answer["recommendation_id"]}])
        assert r.status_code == 200, r.text
        assert r.json()["attribution"] == [{"index": 0, "status": "attributed", "position": 3,
                                            "explored": bool(answer["items"][2].get("explored"))}]
        clicks[answer["variant"]] += 1
        again = requests.post(env.base + "/interactions", headers=AUTH, timeout=10, json=[
            {"user_id": f"u{k}", "item_id": item, "recommendation_id": answer["recommendation_id"]}])
        assert again.json()["attribution"][0]["status"] == "duplicate"  # one click per answer and slot
    unknown = requests.post(env.base + "/interactions", headers=AUTH, timeout=10, json=[
        {"user_id": "u1", "item_id": "i1", "recommendation_id": uuid.uuid4().hex}])
    assert unknown.json()["written"] == 1 and unknown.json()["attribution"][0]["status"] == "unknown_or_expired"
    fast = ask(env, "u5")  # a click right after the answer: attribution waits for the writer's flush
    r = requests.post(env.base + "/interactions", headers=AUTH, timeout=10, json=[
        {"user_id": "u5", "item_id": fast["items"][0]["item_id"], "recommendation_id": fast["recommendation_id"]}])
    assert r.json()["attribution"][0]["status"] == "attributed" and r.json()["attribution"][0]["position"] == 1
    clicks[fast["variant"]] += 1
    stats = requests.get(env.base + "/stats", params={"since": since}, headers=AUTH, timeout=10).json()
    assert stats["by_position"]["3"]["clicks"] == 30 and stats["by_position"]["1"]["clicks"] == 1
    assert stats["clicks"] == 31 and all(stats["by_position"][str(p)]["clicks"] == 0 for p in (2, 4, 5))
    for name in ("a", "b"):
        row = stats["by_variant"][name]
        assert row["clicks"] == clicks[name] and row["impressions"] >= 10 * clicks[name]
    test = stats["variant_tests"]["b vs a"]
    assert 0 <= test["p_value"] <= 1
    assert requests.get(env.base + "/stats", timeout=10).status_code == 401
    bad = requests.get(env.base + "/stats", params={"since": 10, "until": 5}, headers=AUTH, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_parameter"
    metrics = requests.get(env.base + "/metrics", timeout=10).text
    assert 'reco_attributed_interactions_total{' in metrics and 'reco_impressions_total{' in metrics
