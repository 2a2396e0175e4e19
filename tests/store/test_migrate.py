"""A store written by version 0.6 (untagged keys, one stream) is moved to the tagged layout, repeatably."""

from __future__ import annotations

import pytest

from recommender.store import RedisFeatureStore
from recommender.store.migrate import legacy_keys, migrate_legacy

from tests.helpers import all_keys


@pytest.fixture
def store(redis_url, key_prefix):
    s = RedisFeatureStore.from_url(redis_url, key_prefix)
    yield s
    s.close()


def write_version_06(store) -> list[str]:
    """What version 0.6 wrote for two users, two items, a job and a guard: its key names, by hand."""
    c, p = store.client, store.prefix
    c.hset(f"{p}user:u1:features", mapping={"age:25-34": "1.0"})
    c.hset(f"{p}user:a:seen:features", mapping={"f": "2.0"})  # an id that ends like a suffix
    c.sadd(f"{p}users", "u1", "a:seen")
    c.hset(f"{p}item:i1:features", mapping={"genre:drama": "1.0"})
    c.hset(f"{p}item:i:2:features", mapping={"genre:comedy": "1.0"})
    c.sadd(f"{p}items", "i1", "i:2")
    c.zadd(f"{p}items:changed", {"i1": 100.0, "i:2": 101.0})
    ids = []
    for user, item, weight in (("u1", "i1", "2.0"), ("a:seen", "i:2", "1.0"), ("u1", "i:2", "-1.0")):
        ids.append(c.xadd(f"{p}interactions", {"user_id": user, "item_id": item, "weight": weight,
                                                 "timestamp": "5"}))
        c.sadd(f"{p}user:{user}:seen", item)
        c.rpush(f"{p}user:{user}:log", ids[-1])
    c.sadd(f"{p}user:u1:negative", "i:2")
    c.zadd(f"{p}user:u1:recent", {"i1": 50.0})
    c.set(f"{p}model:current", "v1")
    c.hset(f"{p}job:j1", mapping={"status": "queued", "force": "0", "created_at": "1"})
    c.lpush(f"{p}retrain:queue", "j1")
    c.set(f"{p}once:key:req-9", "1:abc", ex=500)
    return ids


def check_migrated(store, ids: list[str]) -> None:
    assert store.get_user("u1") == ({"age:25-34": 1.0}, {"i1", "i:2"}, {"i:2"}) and store.get_user("u1").recent == {"i1": 50.0}
    assert store.get_user("a:seen") == ({"f": 2.0}, {"i:2"}, set())
    assert store.catalogue() == {"i1", "i:2"} and dict(store.item_changes_since(0)) == {"i1": 100.0, "i:2": 101.0}
    assert store.get_item_features(["i1", "i:2"]) == {"i1": {"genre:drama": 1.0}, "i:2": {"genre:comedy": 1.0}}
    assert store.counts() == {"users_with_features": 2, "items": 2, "interactions": 3}
    snap = store.snapshot()
    assert sorted(map(tuple, snap.interactions[["user_id", "item_id", "weight"]].values.tolist())) == [
        ("a:seen", "i:2", 1.0), ("u1", "i1", 2.0), ("u1", "i:2", -1.0)]
    # entry ids are kept, and each user's log list names its entries: erasure still finds them
    assert store.client.lrange(store.keys.user_log("u1"), 0, -1) == [ids[0], ids[2]]
    assert store.describe_user("u1")["interactions"] == 2
    from recommender.store import jobs

    assert jobs.current_version(store) == "v1" and jobs.get_job(store, "j1")["status"] == "queued"
    assert jobs.next_job(store) == "j1"
    assert 0 < store.client.ttl(store.keys.once_key("req-9")) <= 500
    assert legacy_keys(store) == []
    assert not [k for k in all_keys(store) if k.startswith((f"{store.prefix}user:u1:", f"{store.prefix}interactions")
                                                          ) and "{" not in k]


def test_a_version_06_store_is_moved_whole_and_a_second_run_changes_nothing(store):
    ids = write_version_06(store)
    assert set(legacy_keys(store)) >= {store.prefix + "interactions", store.prefix + "users", store.prefix + "items"}
    assert store.is_empty()  # what the new layout sees before the move
    counts = migrate_legacy(store)
    assert counts == {"entity_keys": 8, "log_entries": 3, "users": 2, "other_keys": 5}
    check_migrated(store, ids)
    store.client.lpush(store.keys.retrain_queue, "j1")  # put back what check_migrated took
    assert migrate_legacy(store) == {"entity_keys": 0, "log_entries": 0, "users": 0, "other_keys": 0}
    assert migrate_legacy(store, force_scan=True)["entity_keys"] == 0


def test_an_interrupted_migration_is_finished_by_running_it_again(store):
    ids = write_version_06(store)
    migrate_legacy(store)
    # as if the first run had died after copying the stream but before deleting it: the copy is repeated
    for entry_id, user, item, weight in zip(ids, ("u1", "a:seen", "u1"), ("i1", "i:2", "i:2"), ("2.0", "1.0", "-1.0")):
        store.client.xadd(store.prefix + "interactions", {"user_id": user, "item_id": item, "weight": weight,
                                                          "timestamp": "5"}, id=entry_id)
    counts = migrate_legacy(store)
    assert counts["log_entries"] == 0  # every entry was there already: nothing twice
    store.client.lpush(store.keys.retrain_queue, "j1")
    check_migrated(store, ids)


def test_a_store_of_this_version_is_left_alone(store):
    store.set_user_features("u1", {"a": 1.0})
    store.add_interactions([{"user_id": "u1", "item_id": "i1"}])
    before = all_keys(store)
    assert legacy_keys(store) == [] and migrate_legacy(store) == {"entity_keys": 0, "log_entries": 0, "users": 0,
                                                                   "other_keys": 0}
    assert all_keys(store) == before
