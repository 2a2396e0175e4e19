"""Lifecycle, data faults, filters and similar items end to end: real gunicorn (2 workers), real Redis, HTTP.

Each fault of issue 14 as it was found over HTTP, with the right answer asserted.
"""

from __future__ import annotations

import uuid
from collections import Counter
from urllib.parse import quote

import pytest
import requests

from recommender.model import LFMRecommender
from recommender.store.jobs import current_version
from tests.helpers import (TOKEN, all_keys, delete_prefix, log_entries, log_length, publish_first_model, seed_store,
                           service_settings, small_world, start_gunicorn, wait_for)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def world():
    return small_world()


@pytest.fixture(scope="module")
def env(redis_url, tmp_path_factory, world):
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    tmp = tmp_path_factory.mktemp("lifecycle")
    settings = service_settings(redis_url, prefix, tmp / "models", trainer_in_app=True, watch_interval=0.2)
    store = seed_store(redis_url, prefix, world)
    version = publish_first_model(store, settings)
    service = start_gunicorn(settings, tmp, workers=2)
    yield type("Env", (), dict(base=service.base, store=store, settings=settings, version=version))
    service.stop()
    delete_prefix(redis_url, prefix)


def get(env, path, **kw):
    return requests.get(env.base + path, timeout=10, **kw)


def items_of(answer) -> list[str]:
    return [i["item_id"] for i in answer.json()["items"]]


def retrain(env) -> dict:
    """Force a retrain through the API and wait until both workers serve the new version."""
    r = requests.post(env.base + "/retrain", json={"force": True}, headers=AUTH, timeout=10)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = wait_for(lambda: (lambda j: j if j["status"] in ("succeeded", "failed") else None)(
        get(env, f"/retrain/{job_id}", headers=AUTH).json()), timeout=90)
    assert job["status"] == "succeeded", job

    def both_workers_on_it():
        versions = {get(env, "/model", headers={"Connection": "close"}).json()["version"] for _ in range(12)}
        return versions == {job["version"]}

    wait_for(both_workers_on_it, timeout=20)
    env.version = job["version"]
    return job


def every_worker(env, path, predicate, tries: int = 12) -> bool:
    """predicate(answer) for ``tries`` fresh connections (both workers answer some of them)."""
    return all(predicate(get(env, path, headers={"Connection": "close"})) for _ in range(tries))


def test_data_faults_found_over_http_are_gone_after_a_retrain(env, world):
    """Fault 1: 2,000 interactions of weight -1 on the least popular item; fault 2: a weight of 1e300, and
    one poisoned entry written past the API; fault 3: 2,500 interactions on an item that was never PUT."""
    before = log_length(env.store)
    poison = requests.post(env.base + "/interactions", headers=AUTH, timeout=10,
                           json=[{"user_id": "u1", "item_id": "i1", "weight": 1e300}])
    assert poison.status_code == 400 and poison.json()["error"]["code"] == "invalid_body", poison.text
    assert "MAX_WEIGHT" in poison.json()["error"]["message"]
    assert log_length(env.store) == before  # nothing written

    counts = Counter(world.interactions["item_id"])
    least = min(sorted(counts), key=lambda i: counts[i])
    hated = [{"user_id": f"hater-{k}", "item_id": least, "weight": -1} for k in range(2000)]
    ghost = [{"user_id": f"ghost-fan-{k % 300}", "item_id": "ghost-item"} for k in range(2500)]
    known = sorted(set(world.interactions["user_id"]))[:40]
    ghost += [{"user_id": u, "item_id": "ghost-item"} for u in known]
    for batch in (hated, ghost):
        r = requests.post(env.base + "/interactions", headers=AUTH, json=batch, timeout=30)
        assert r.status_code == 200 and r.json()["written"] == len(batch), r.text
    env.store.client.xadd(env.store.keys.log_partition("u1"), {"user_id": "u1", "item_id": "i2", "weight": "1e300"})  # past the door

    job = retrain(env)
    assert job["metrics"]["skipped_records"] == {"malformed": 0, "weight_out_of_range": 1}

    anonymous = items_of(get(env, "/recommend/nobody-at-all?n=100"))
    assert least not in anonymous[:50]  # negatives are not popularity
    assert "ghost-item" not in anonymous  # never PUT: not in the catalogue
    other_known = sorted(set(world.interactions["user_id"]))[50:60]
    for user in other_known:
        assert "ghost-item" not in items_of(get(env, f"/recommend/{user}?n=100&exclude_seen=false"))
    for k in range(5):
        assert least not in items_of(get(env, f"/recommend/hater-{k}?n=100&exclude_seen=false"))
    # once PUT, the item that was learned from interactions becomes recommendable at once
    assert requests.put(env.base + "/items/ghost-item/features", json={}, headers=AUTH, timeout=10).status_code == 200
    assert wait_for(lambda: every_worker(env, "/recommend/nobody-at-all?n=3",
                                         lambda r: items_of(r)[0] == "ghost-item"), timeout=10)


def test_emptying_a_known_users_features_scores_it_by_its_indicator_alone(env, world):
    """Fault 4: PUT {} used to be ignored (the training-time features kept serving)."""
    user = sorted(set(world.interactions["user_id"]))[3]
    model = LFMRecommender.load(f"{env.settings.model_dir}/{current_version(env.store)}")
    _, seen, negative = env.store.get_user(user)
    before = items_of(get(env, f"/recommend/{user}?n=10"))
    r = requests.put(env.base + f"/users/{user}/features", json={}, headers=AUTH, timeout=10)
    assert r.status_code == 200 and r.json() == {"user_id": user, "features": 0}
    expected = [i for i, _ in model.recommend(user, 10, user_features={}, exclude=seen | negative)]
    after = items_of(get(env, f"/recommend/{user}?n=10"))
    assert before != after
    # items= keeps the comparison to candidates both sides know (the service adds catalogue-only new items)
    assert [i for i in after if i in model.iid_map.index][:5] == [i for i in expected if i in after][:5]
    info = get(env, f"/users/{user}", headers=AUTH).json()
    assert info["features"] == {} and info["known_to_model"] is True and info["seen"] == len(seen)


@pytest.mark.parametrize("method, path, body, code", [
    ("put", "/items/" + quote("a,b", safe="") + "/features", {"f": 1}, "invalid_id"),
    ("put", "/items/" + quote("a/b", safe="") + "/features", {"f": 1}, "invalid_id"),
    ("put", "/users/" + quote(" padded", safe="") + "/features", {"f": 1}, "invalid_id"),
    ("put", "/items/i1/features", {"a|b": 1}, "invalid_body"),
    ("put", "/items/i1/features", {"a": 101}, "invalid_body"),
    ("post", "/interactions", [{"user_id": "u1", "item_id": "a,b"}], "invalid_body"),
    ("get", "/recommend/u1?filter=genre:drama|", None, "invalid_parameter"),
    ("get", "/recommend/u1?exclude=" + quote("a/b", safe=""), None, "invalid_parameter"),
    ("get", "/items/" + quote("a,b", safe="") + "/similar", None, "invalid_id"),
    ("delete", "/items/" + quote("a,b", safe=""), None, "invalid_id"),
])
def test_the_id_grammar_is_enforced_at_every_door(env, method, path, body, code):
    """Fault 5: an id with a comma used to be accepted and then could never be listed in items=."""
    r = requests.request(method, env.base + path, json=body, headers=AUTH, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text


def test_a_deleted_item_leaves_every_answer_of_every_worker_and_a_put_brings_it_back(env, world):
    user = sorted(set(world.interactions["user_id"]))[7]
    top = items_of(get(env, f"/recommend/{user}?n=5"))[0]
    popular = items_of(get(env, "/recommend/nobody-else?n=5"))[1]
    neighbour = items_of(get(env, f"/items/{top}/similar?n=1"))[0]
    for item in (top, popular):
        r = requests.delete(env.base + f"/items/{item}", headers=AUTH, timeout=10)
        assert r.status_code == 200 and r.json() == {"item_id": item, "removed": True}
    gone = {top, popular}
    assert wait_for(lambda: every_worker(env, f"/recommend/{user}?n=100", lambda r: not gone & set(items_of(r))),
                    timeout=10)
    assert every_worker(env, "/recommend/nobody-else?n=100", lambda r: not gone & set(items_of(r)))
    assert every_worker(env, f"/items/{neighbour}/similar?n=100", lambda r: not gone & set(items_of(r)))
    assert get(env, f"/items/{top}", headers=AUTH).json()["in_catalogue"] is False
    features = env.store.get_item_features([top])[top]
    assert requests.put(env.base + f"/items/{top}/features", json=features, headers=AUTH,
                        timeout=10).status_code == 200
    assert wait_for(lambda: every_worker(env, f"/recommend/{user}?n=5", lambda r: items_of(r)[0] == top), timeout=10)


def test_erasing_a_user_leaves_nothing_in_redis_and_the_next_retrain_forgets_it(env, world, redis_url):
    user = sorted(set(world.interactions["user_id"]))[45]  # not one of the ghost item's fans
    n_logged = int((world.interactions["user_id"] == user).sum())
    assert get(env, f"/users/{user}", headers=AUTH).json()["known_to_model"] is True
    r = requests.delete(env.base + f"/users/{user}", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    erased = r.json()["erased"]
    assert erased["features"] == 1 and erased["interactions"] == n_logged and erased["seen"] == n_logged
    assert not [k for k in all_keys(env.store) if f"{{{user}}}" in k or k.endswith(f":log:{user}")]
    assert not [f for f in log_entries(env.store) if f.get("user_id") == user]
    retrain(env)
    info = get(env, f"/users/{user}", headers=AUTH).json()
    assert info == {"user_id": user, "features": None, "seen": 0, "negative": 0, "interactions": 0,
                    "seen_items": [], "known_to_model": False}
    assert get(env, f"/recommend/{user}").json()["strategy"] == "popular"


def test_filters_and_similar_items_over_http(env, world):
    user = sorted(set(world.interactions["user_id"]))[46]
    drama = items_of(get(env, f"/recommend/{user}?n=20&filter=genre:drama"))
    assert len(drama) == 20 and all(world.item_genre[i] == "drama" for i in drama)
    either = items_of(get(env, f"/recommend/{user}?n=30&filter=genre:drama|genre:horror"))
    assert {world.item_genre[i] for i in either} <= {"drama", "horror"}
    both = items_of(get(env, f"/recommend/{user}?n=10&filter=genre:drama&filter=tag:drama-0"))
    assert both and all(world.item_genre[i] == "drama" for i in both)
    assert items_of(get(env, f"/recommend/{user}?n=10&filter=genre:no-such-genre")) == []
    unfiltered = items_of(get(env, f"/recommend/{user}?n=5"))
    excluded = items_of(get(env, f"/recommend/{user}?n=5&exclude={unfiltered[0]},{unfiltered[2]}"))
    assert excluded[:3] == [unfiltered[1]] + unfiltered[3:5]

    item = drama[0]
    r = get(env, f"/items/{item}/similar?n=10&filter=genre:drama")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["known_to_model"] is True and item not in items_of(r) and len(body["items"]) == 10
    assert all(world.item_genre[i] == "drama" for i in items_of(r))
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    missing = get(env, "/items/no-such-item/similar")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_item"
    unauthorised = requests.delete(env.base + f"/items/{item}", timeout=10)
    assert unauthorised.status_code == 401
