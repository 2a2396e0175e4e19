"""Lifecycle and data rules in the store (a single Redis and a Redis Cluster): erasure, catalogue removal, the
weight bound, the id grammar."""

from __future__ import annotations

import pandas as pd
import pytest

from recommender.store import RedisFeatureStore
from recommender.store.feature_store import SEEN_ITEMS_SHOWN

from tests.helpers import all_keys, both_redis_url, log_entries

redis_url = both_redis_url()


@pytest.fixture
def store(redis_url, key_prefix):
    s = RedisFeatureStore.from_url(redis_url, key_prefix, max_weight=100.0)
    yield s
    s.close()


def keys_of(store):
    return all_keys(store)


def test_erasing_a_user_leaves_nothing_of_it_and_everything_of_the_others(store, monkeypatch):
    store.set_user_features("gone", {"age:25-34": 1.0})
    store.set_user_features("stays", {"age:25-34": 1.0})
    records = [{"user_id": "gone", "item_id": f"i{k}", "weight": 1.0 if k % 3 else -1.0} for k in range(25)]
    records += [{"user_id": "stays", "item_id": f"i{k}"} for k in range(5)]
    store.add_interactions(records)
    store.add_interactions([{"user_id": "gone", "item_id": "i99"}])  # a second batch, a second script call
    assert store.describe_user("gone") == {"features": {"age:25-34": 1.0}, "seen": 26, "negative": 9,
                                           "interactions": 26,
                                           "seen_items": sorted([f"i{k}" for k in range(25)] + ["i99"])}
    erased = store.erase_user("gone", chunk=7)  # several chunks of the user's log list
    assert erased == {"features": 1, "seen": 26, "negative": 9, "interactions": 26}
    assert not [k for k in keys_of(store) if "gone" in k]
    assert [e["user_id"] for e in log_entries(store)] == ["stays"] * 5
    assert store.snapshot().interactions["user_id"].unique().tolist() == ["stays"]
    assert store.get_user("gone") == (None, set(), set())
    assert store.get_user("stays")[1] == {f"i{k}" for k in range(5)}
    assert store.counts()["users_with_features"] == 1
    assert store.erase_user("gone") == {"features": 0, "seen": 0, "negative": 0, "interactions": 0}


def test_erasure_with_a_capped_log_erases_every_entry_the_log_still_holds(redis_url, key_prefix):
    store = RedisFeatureStore.from_url(redis_url, key_prefix, max_interactions=100)
    for start in range(0, 2000, 100):
        store.add_interactions([{"user_id": "u", "item_id": f"i{k}"} for k in range(start, start + 100)]
                               + [{"user_id": "v", "item_id": f"i{start}"}])
    kept = [e["user_id"] for e in log_entries(store)]
    per_partition = 7  # ceil(100 / 16 partitions)
    assert len(kept) == per_partition * len({store.keys.log_partition(u) for u in "uv"})
    assert store.client.llen(store.keys.user_log("u")) == 2 * per_partition + 1000  # the user's list is capped too
    erased = store.erase_user("u")
    assert erased["interactions"] == kept.count("u") > 0
    assert [e["user_id"] for e in log_entries(store)] == ["v"] * kept.count("v")


def test_removing_an_item_takes_it_out_of_the_catalogue_until_it_is_put_again(store):
    store.set_item_features("i1", {"genre:drama": 1.0})
    before = dict(store.item_changes_since(0))["i1"]
    assert store.remove_item("i1") is True and store.remove_item("i1") is False
    assert store.catalogue() == set() and store.in_catalogue(["i1", "i2"]) == {"i1": False, "i2": False}
    assert dict(store.item_changes_since(0))["i1"] >= before  # watchers are told
    assert store.describe_item("i1") == {"features": {"genre:drama": 1.0}, "in_catalogue": False}
    store.set_item_features("i1", {})
    assert store.describe_item("i1") == {"features": {}, "in_catalogue": True}
    assert store.describe_item("i2") == {"features": None, "in_catalogue": False}


@pytest.mark.parametrize("write", [
    lambda s: s.add_interactions([{"user_id": "u", "item_id": "i", "weight": 1e300}]),
    lambda s: s.add_interactions([{"user_id": "u", "item_id": "i", "weight": -101}]),
    lambda s: s.set_item_features("i", {"genre:drama": 1000.0}),
    lambda s: s.bulk_load_interactions(pd.DataFrame({"user_id": ["u", "v"], "item_id": ["i", "j"],
                                                     "weight": [1.0, 500.0]})),
    lambda s: s.bulk_load_item_features(pd.DataFrame({"item_id": ["i"], "feature": ["f"], "weight": [-1e9]})),
])
def test_weights_beyond_max_weight_are_refused_and_nothing_is_written(store, write):
    with pytest.raises(ValueError, match="MAX_WEIGHT"):
        write(store)
    assert keys_of(store) == []


@pytest.mark.parametrize("bad_id", ["a,b", "a/b", " padded", "tab\tinside", "new\nline", "", "x" * 257])
def test_the_id_grammar_holds_wherever_ids_enter(store, bad_id):
    for write in (lambda: store.set_user_features(bad_id, {"f": 1.0}),
                  lambda: store.set_item_features(bad_id, {"f": 1.0}),
                  lambda: store.add_interactions([{"user_id": "u", "item_id": bad_id}]),
                  lambda: store.bulk_load_interactions(pd.DataFrame({"user_id": [bad_id], "item_id": ["i"]})),
                  lambda: store.bulk_load_user_features(pd.DataFrame({"user_id": [bad_id], "feature": ["f"]})),
                  lambda: store.remove_item(bad_id), lambda: store.erase_user(bad_id)):
        with pytest.raises(ValueError):
            write()
    assert keys_of(store) == []
    for name in ("a|b", "a,b", " a"):
        with pytest.raises(ValueError, match="feature name"):
            store.set_item_features("i", {name: 1.0})
    # ids may hold ":" and any other printable character, including non-ASCII ones
    store.set_item_features("ok:ü-1 2", {"genre:drama": 1.0})
    assert store.get_item_features(["ok:ü-1 2"]) == {"ok:ü-1 2": {"genre:drama": 1.0}}


def test_the_snapshot_skips_and_counts_entries_it_cannot_use(store):
    store.add_interactions([{"user_id": "u", "item_id": "i1", "weight": 2.0}])
    stream = store.keys.log_partition("u")
    store.client.xadd(stream, {"user_id": "u", "item_id": "i2", "weight": "1e300"})  # written past the door
    store.client.xadd(stream, {"user_id": "u", "item_id": "i3", "weight": "nan"})
    store.client.xadd(stream, {"user_id": "", "item_id": "i4", "weight": "1"})
    snap = store.snapshot()
    assert snap.interactions["item_id"].tolist() == ["i1"]
    assert snap.skipped == {"malformed": 2, "weight_out_of_range": 1}


def test_describe_user_lists_the_seen_items_up_to_a_cap_and_counts_them_all(store):
    store.add_interactions([{"user_id": "busy", "item_id": f"i{k:04d}"} for k in range(SEEN_ITEMS_SHOWN + 30)])
    described = store.describe_user("busy")
    assert described["seen"] == SEEN_ITEMS_SHOWN + 30
    shown = described["seen_items"]
    assert len(shown) == SEEN_ITEMS_SHOWN == len(set(shown)) and shown == sorted(shown)
    assert set(shown) <= {f"i{k:04d}" for k in range(SEEN_ITEMS_SHOWN + 30)}
    assert store.describe_user("nobody")["seen_items"] == []
