"""RedisFeatureStore against a real Redis and a real Redis Cluster: layout, atomicity, round trips per read,
validation, snapshot, exactly-once writes, retention."""

from __future__ import annotations

import math
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
import redis

import recommender.store.snapshot as snapshot_module
from recommender.errors import IdempotencyConflictError
from recommender.store.interactions import CALL_GUARD_TTL
from recommender.errors import StoreUnavailableError
from recommender.localredis import LocalRedis, free_port
from recommender.model import LFMRecommender
from recommender.store import RedisFeatureStore, Snapshot
from recommender.store.connection import connection_kwargs, primaries
from recommender.store.keys import slot_of
from recommender.synthetic import make_world

from tests.helpers import all_keys, both_redis_url, delete_prefix, log_entries, log_length

redis_url = both_redis_url()  # every test here that uses Redis runs on a single Redis and on a cluster


@pytest.fixture
def store(redis_url, key_prefix):
    """A store on the test Redis under a private prefix."""
    s = RedisFeatureStore.from_url(redis_url, key_prefix)
    yield s
    s.close()


def keys_of(store: RedisFeatureStore) -> list[str]:
    """Every key under the store's prefix (every master of a cluster)."""
    return all_keys(store)


def nodes_of(store: RedisFeatureStore) -> int:
    """Servers the store talks to: 1, or the masters of a cluster."""
    return len(primaries(store.client))


@pytest.fixture
def round_trips(monkeypatch):
    """A list that grows by one for every packet of commands any connection sends (one per round trip)."""
    sent: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        """Count, then send as usual."""
        sent.append(1)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def sort_frame(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows sorted by ``by`` with a fresh index and object-typed id columns, for equality checks."""
    out = frame.sort_values(by, kind="stable").reset_index(drop=True)
    for col in out.columns:
        if col in ("user_id", "item_id", "feature"):
            out[col] = out[col].astype(object)
        else:
            out[col] = out[col].astype(np.float64)
    return out


# ---------------------------------------------------------------------- layout and round trips


def test_key_layout_follows_the_design_table(store):
    store.set_user_features("u1", {"age:25-34": 1.0})
    store.set_item_features("i1", {"genre:drama": 1.0})
    store.add_interactions([{"user_id": "u1", "item_id": "i1", "weight": 2.0, "timestamp": 100}])
    p = store.prefix
    assert store.keys.user_features("u1") == f"{p}user:{{u1}}:features"
    part = store.keys.log_partition("u1")
    assert part.startswith(f"{p}interactions:{{") and part in store.keys.interactions.keys
    guards = [k for k in keys_of(store) if k.startswith(f"{p}once:")]  # add_interactions' retry guard
    assert len(guards) == 1 and 0 < store.client.ttl(guards[0]) <= 60
    assert sorted(set(keys_of(store)) - set(guards)) == sorted([
        f"{p}user:{{u1}}:features", store.keys.users_part("u1"), f"{p}item:{{i1}}:features",
        f"{p}items:{{catalogue}}", f"{p}items:{{catalogue}}:changed", f"{p}user:{{u1}}:seen",
        f"{part}:log:u1", f"{p}user:{{u1}}:recent", part])
    store.add_interactions([{"user_id": "u1", "item_id": "i2", "weight": -1.0}])
    assert store.client.smembers(f"{p}user:{{u1}}:negative") == {"i2"}  # weight <= 0: a negative signal
    assert store.client.hgetall(f"{p}user:{{u1}}:features") == {"age:25-34": "1.0"}
    assert store.client.type(part) == "stream"
    if store.cluster:  # the guard of the log's part of the batch lives in that part's slot
        assert slot_of(guards[0]) == slot_of(part)


def test_round_trip_of_every_kind_of_record(store):
    assert store.is_empty()
    weights = {"a": 0.1, "b": 1 / 3, "c": -2.5, "d": 1e-300, "e": 7}
    store.set_user_features("user:with:colons", weights)
    store.set_user_features(42, {"x": 1.0})  # int ids are their decimal string
    store.set_item_features("i:1", {"genre:drama": 1.0, "tag:x": 0.5})
    store.set_item_features("i2", {"genre:comedy": 1.0})
    store.set_item_features("hidden", {"genre:comedy": 1.0}, add_to_catalogue=False)
    written = store.add_interactions([
        {"user_id": "user:with:colons", "item_id": "i:1", "weight": 3, "timestamp": 1_700_000_000},
        {"user_id": "user:with:colons", "item_id": "i2", "timestamp": 1_700_000_001.5},
        {"user_id": 42, "item_id": "i2"},
    ])
    assert written == 3

    feats, seen, _ = store.get_user("user:with:colons")
    assert feats == {k: float(v) for k, v in weights.items()}  # exact: floats are stored with repr
    assert seen == {"i:1", "i2"}
    assert store.get_user("42") == ({"x": 1.0}, {"i2"}, set())
    assert store.get_user("nobody") == (None, set(), set())
    assert store.get_item_features(["i:1", "i2", "hidden", "missing"]) == {
        "i:1": {"genre:drama": 1.0, "tag:x": 0.5}, "i2": {"genre:comedy": 1.0}, "hidden": {"genre:comedy": 1.0}}
    assert store.catalogue() == {"i:1", "i2"}
    assert store.catalogue_size() == 2
    assert store.counts() == {"users_with_features": 2, "items": 2, "interactions": 3}
    assert not store.is_empty()

    snap = store.snapshot()
    inter = snap.interactions
    assert list(inter.columns) == ["user_id", "item_id", "weight", "timestamp"]
    # the log is partitioned by user: a user's entries keep their order, users interleave by stream id
    colons = inter[inter["user_id"] == "user:with:colons"]
    assert colons["item_id"].tolist() == ["i:1", "i2"] and colons["weight"].tolist() == [3.0, 1.0]
    assert colons["timestamp"].tolist() == [1_700_000_000.0, 1_700_000_001.5]
    other = inter[inter["user_id"] == "42"]
    assert other["item_id"].tolist() == ["i2"] and other["weight"].tolist() == [1.0]
    assert abs(other["timestamp"].iloc[0] - time.time()) < 60  # defaulted to "now"
    assert len(inter) == 3
    users = snap.user_features.set_index(["user_id", "feature"])["weight"].to_dict()
    assert users == {("user:with:colons", k): float(v) for k, v in weights.items()} | {("42", "x"): 1.0}
    items = snap.item_features.set_index(["item_id", "feature"])["weight"].to_dict()
    # features of an item kept out of the catalogue are still training data
    assert items == {("i:1", "genre:drama"): 1.0, ("i:1", "tag:x"): 0.5, ("i2", "genre:comedy"): 1.0,
                     ("hidden", "genre:comedy"): 1.0}


def test_ids_that_look_like_key_parts_stay_separate(store):
    # a user id ending in ":features" or ":seen" must not collide with, or be parsed as, another user's key
    store.set_user_features("a", {"f": 1.0})
    store.set_user_features("a:features", {"g": 2.0})
    store.set_user_features("a:seen", {"h": 3.0})
    store.add_interactions([{"user_id": "a", "item_id": "i1"}])
    assert store.get_user("a") == ({"f": 1.0}, {"i1"}, set())
    assert store.get_user("a:features") == ({"g": 2.0}, set(), set())
    assert store.get_user("a:seen") == ({"h": 3.0}, set(), set())
    snap = store.snapshot()
    assert sorted(map(tuple, snap.user_features.values.tolist())) == [
        ("a", "f", 1.0), ("a:features", "g", 2.0), ("a:seen", "h", 3.0)]


def test_replacing_features_drops_old_names_and_empty_is_kept_apart_from_absent(store):
    store.set_user_features("u1", {"a": 1.0, "b": 1.0})
    store.set_user_features("u1", {"c": 0.5})
    assert store.get_user("u1")[0] == {"c": 0.5}
    assert store.counts()["users_with_features"] == 1
    store.set_user_features("u1", {})
    assert store.get_user("u1")[0] == {}  # set to nothing ...
    assert store.get_user("u2")[0] is None  # ... is not the same as never written
    assert store.counts()["users_with_features"] == 0
    assert keys_of(store) == [store.keys.user_features("u1")]  # the empty marker, in the user's own hash

    store.set_item_features("i1", {"a": 1.0, "b": 1.0})
    store.set_item_features("i1", {"c": 1.0})
    assert store.get_item_features(["i1"]) == {"i1": {"c": 1.0}}
    store.set_item_features("i1", {})
    assert store.get_item_features(["i1", "i9"]) == {"i1": {}}  # set to nothing; i9 never written
    assert store.catalogue() == {"i1"}  # still recommendable (known to the model without features)


def test_replacing_a_users_features_is_atomic_for_concurrent_readers(store):
    a = {f"a{k}": float(k) for k in range(50)}
    b = {f"b{k}": float(k) + 0.5 for k in range(50)}
    store.set_user_features("u1", a)
    stop = threading.Event()
    writes = [0]
    errors: list[BaseException] = []

    def writer() -> None:
        """Alternate between A and B until told to stop."""
        try:
            while not stop.is_set():
                store.set_user_features("u1", b if writes[0] % 2 == 0 else a)
                writes[0] += 1
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    reads = saw_a = saw_b = 0
    bad: list[dict] = []
    deadline = time.monotonic() + 2.0
    try:
        while time.monotonic() < deadline:
            feats, _, _ = store.get_user("u1")
            reads += 1
            if feats == a:
                saw_a += 1
            elif feats == b:
                saw_b += 1
            else:
                bad.append(feats)
    finally:
        stop.set()
        thread.join()
    print(f"\n{reads} reads, {writes[0]} writes, saw A {saw_a}x, B {saw_b}x, mixed {len(bad)}x")
    assert not errors
    assert not bad, f"{len(bad)} reads saw a half-replaced feature set, e.g. {sorted(bad[0])[:6]}"
    assert reads > 300 and writes[0] > 300
    assert saw_a > 0 and saw_b > 0  # the writer really interleaved with the reader


# ---------------------------------------------------------------------- round trips per request


def test_get_item_features_of_100_items_is_one_round_trip_per_node(store, round_trips):
    for k in range(80):
        store.set_item_features(f"i{k}", {f"tag:{k % 7}": 1.0, "genre:x": 0.5})
    wanted = [f"i{k}" for k in range(100)]  # i80..i99 have no features
    store.get_item_features(wanted)  # open the pooled connections (connect handshakes are not part of a request)
    before = len(round_trips)
    got = store.get_item_features(wanted)
    assert len(round_trips) - before == nodes_of(store)  # items spread over every master of a cluster
    assert set(got) == {f"i{k}" for k in range(80)}
    assert got["i13"] == {"tag:6": 1.0, "genre:x": 0.5}
    # the counter does see separate commands: two plain reads are two round trips
    before = len(round_trips)
    store.client.hgetall(store.keys.item_features("i1"))
    store.client.hgetall(store.keys.item_features("i2"))
    assert len(round_trips) - before == 2


def test_get_user_is_one_round_trip(store, round_trips):
    store.set_user_features("u1", {f"f{k}": 1.0 for k in range(10)})
    store.add_interactions([{"user_id": "u1", "item_id": f"i{k}"} for k in range(50)])
    store.get_user("u1")  # opens this thread's connection (the connect handshake is not part of a request)
    before = len(round_trips)
    feats, seen, _ = store.get_user("u1")
    assert len(round_trips) - before == 1
    assert len(feats) == 10 and len(seen) == 50
    assert store.get_user("nobody") == (None, set(), set())


def test_get_user_connection_survives_an_error_reply(store):
    store.set_user_features("ok", {"a": 1.0})
    store.add_interactions([{"user_id": "ok", "item_id": "i1"}])
    store.client.set(store.keys.user_features("broken"), "not a hash")  # WRONGTYPE for HGETALL
    with pytest.raises(redis.exceptions.ResponseError):
        store.get_user("broken")
    # the unread SMEMBERS reply of the failed call must not become the answer of the next one
    for _ in range(3):
        assert store.get_user("ok") == ({"a": 1.0}, {"i1"}, set())


def test_get_user_uses_one_connection_per_thread_and_close_resets_them(store):
    store.set_user_features("u1", {"a": 1.0})
    conns, errors = [], []

    def read() -> None:
        try:
            for _ in range(50):
                assert store.get_user("u1") == ({"a": 1.0}, set(), set())
            conns.append(store.connections.for_key(store.keys.user_features("u1")))
        except Exception as exc:  # reported below: pytest does not see exceptions in threads
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({id(c) for c in conns}) == 4
    store.get_user("u1")
    mine = store.connections.for_key(store.keys.user_features("u1"))
    assert mine.is_connected
    store.close()
    assert not mine.is_connected
    assert store.get_user("u1") == ({"a": 1.0}, set(), set())  # reconnects by itself


def test_get_user_speaks_resp2_too(redis_url, key_prefix):
    s = RedisFeatureStore.from_url(redis_url, key_prefix, protocol=2)
    try:
        s.set_user_features("u1", {"a": 1.0, "b": 0.5})
        s.add_interactions([{"user_id": "u1", "item_id": "i1"}, {"user_id": "u1", "item_id": "i2"}])
        assert s.get_user("u1") == ({"a": 1.0, "b": 0.5}, {"i1", "i2"}, set())
        assert s.get_user("nobody") == (None, set(), set())
    finally:
        s.close()


# ---------------------------------------------------------------------- validation


LONG = "x" * 257
BAD_USER_WRITES = [
    ("", {"a": 1.0}), (LONG, {"a": 1.0}), (None, {"a": 1.0}), (1.5, {"a": 1.0}), (True, {"a": 1.0}),
    (["u"], {"a": 1.0}), ("u1", {"": 1.0}), ("u1", {LONG: 1.0}), ("u1", {5: 1.0}),
    ("u1", {"a": "1"}), ("u1", {"a": math.nan}), ("u1", {"a": math.inf}), ("u1", {"a": None}),
    ("u1", {"a": True}), ("u1", [("a", 1.0)]), ("u1", {"ok": 1.0, "bad": -math.inf}),
]


@pytest.mark.parametrize("user_id,features", BAD_USER_WRITES)
def test_invalid_user_features_raise_and_write_nothing(store, user_id, features):
    store.set_user_features("keep", {"old": 1.0})
    before = keys_of(store)
    with pytest.raises(ValueError):
        store.set_user_features(user_id, features)
    with pytest.raises(ValueError):
        store.set_item_features(user_id if user_id != "u1" else "i1", features)
    assert keys_of(store) == before
    assert store.get_user("keep")[0] == {"old": 1.0}


@pytest.mark.parametrize("bad", [
    {"user_id": "", "item_id": "i1"}, {"user_id": LONG, "item_id": "i1"}, {"user_id": "u1"},
    {"item_id": "i1"}, {"user_id": "u1", "item_id": None}, {"user_id": "u1", "item_id": "i1", "weight": math.nan},
    {"user_id": "u1", "item_id": "i1", "weight": "2"}, {"user_id": "u1", "item_id": "i1", "timestamp": -1},
    {"user_id": "u1", "item_id": "i1", "timestamp": "now"}, {"user_id": "u1", "item_id": "i1", "timestamp": math.inf},
    ("u1", "i1"),
])
def test_invalid_interactions_raise_and_write_nothing(store, bad):
    good = {"user_id": "u0", "item_id": "i0"}
    with pytest.raises(ValueError):
        store.add_interactions([good, bad])  # the good record before it is not written either
    assert keys_of(store) == []


@pytest.mark.parametrize("method,frame", [
    ("bulk_load_user_features", pd.DataFrame({"user_id": ["u1", "u2", ""], "feature": ["a", "b", "c"]})),
    ("bulk_load_user_features", pd.DataFrame({"user_id": ["u1", "u2"], "feature": ["a", LONG]})),
    ("bulk_load_user_features", pd.DataFrame({"user_id": ["u1", "u2"], "feature": ["a", "b"],
                                              "weight": [1.0, np.nan]})),
    ("bulk_load_user_features", pd.DataFrame({"user_id": ["u1"], "weight": [1.0]})),
    ("bulk_load_item_features", pd.DataFrame({"item_id": ["i1", None], "feature": ["a", "b"]})),
    ("bulk_load_item_features", pd.DataFrame({"item_id": ["i1", "i2"], "feature": ["a", None]})),
    ("bulk_load_item_features", pd.DataFrame({"item_id": ["i1", "i2"], "feature": ["a", "b"],
                                              "weight": ["1", "2"]})),
    ("bulk_load_interactions", pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"],
                                             "weight": [1.0, np.inf]})),
    ("bulk_load_interactions", pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"],
                                             "timestamp": [1, -5]})),
    ("bulk_load_interactions", pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", 2.5]})),
])
def test_invalid_bulk_frames_raise_and_write_nothing(store, method, frame):
    with pytest.raises(ValueError):
        getattr(store, method)(frame, batch=1)  # batch=1: a late bad row would otherwise follow written ones
    assert keys_of(store) == []


def test_limits_are_inclusive(store):
    at_limit = "x" * 256
    store.set_user_features(at_limit, {at_limit: 1.0})
    assert store.get_user(at_limit)[0] == {at_limit: 1.0}


@pytest.mark.parametrize("call", [
    lambda s: s.get_user(""), lambda s: s.get_user("x" * 257), lambda s: s.get_item_features(["i1", ""]),
    lambda s: s.item_changes_since(math.nan), lambda s: s.item_changes_since("yesterday"),
    lambda s: s.snapshot(after_id="not-an-id"), lambda s: s.bulk_load_interactions(pd.DataFrame(), batch=0),
])
def test_invalid_read_arguments_raise_value_error(store, call):
    with pytest.raises(ValueError):
        call(store)


# ---------------------------------------------------------------------- changes, bulk loads, snapshot


def test_item_changes_since(store):
    t0 = time.time()
    store.set_item_features("a", {"f": 1.0})
    time.sleep(0.01)
    store.set_item_features("b", {"f": 1.0})
    changes = store.item_changes_since(t0 - 1)
    assert [item for item, _ in changes] == ["a", "b"]
    t_a, t_b = changes[0][1], changes[1][1]
    assert t0 - 1 < t_a < t_b <= time.time()
    assert store.item_changes_since(t_a) == [("b", t_b)]  # exclusive lower bound
    assert store.item_changes_since(t_b) == []
    time.sleep(0.01)
    store.set_item_features("a", {"g": 1.0})  # rewriting moves it to the end
    assert [item for item, _ in store.item_changes_since(t_a)] == ["b", "a"]
    assert [item for item, _ in store.item_changes_since(-math.inf)] == ["b", "a"]


def test_bulk_loads_count_rows_and_fill_every_structure(store):
    users = pd.DataFrame({"user_id": ["u1", "u1", "u2", 3], "feature": ["a", "b", "a", "c"],
                          "weight": [1.0, 0.5, 2.0, 1.0]})
    items = pd.DataFrame({"item_id": ["i1", "i2", "i2", "i3", "i1"], "feature": ["g", "g", "h", "g", "g"]})
    inter = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["i1", "i2", "i2"],
                          "weight": [5.0, 1.0, 2.0], "timestamp": [10, 11, 12]})
    assert store.is_empty()
    assert store.bulk_load_user_features(users, batch=2) == 4
    assert store.bulk_load_item_features(items, batch=2, progress=True) == 5
    assert store.bulk_load_interactions(inter, batch=2) == 3
    assert store.counts() == {"users_with_features": 3, "items": 3, "interactions": 3}
    assert store.get_user("u1") == ({"a": 1.0, "b": 0.5}, {"i1", "i2"}, set())
    assert store.get_user("3") == ({"c": 1.0}, set(), set())
    # a repeated (item, feature) row is summed, as LFMRecommender.fit sums it
    assert store.get_item_features(["i1", "i2", "i3"]) == {"i1": {"g": 2.0}, "i2": {"g": 1.0, "h": 1.0},
                                                           "i3": {"g": 1.0}}
    assert {item for item, _ in store.item_changes_since(0)} == {"i1", "i2", "i3"}
    # a second bulk load replaces the feature set of the users it names, and leaves the others alone
    store.bulk_load_user_features(pd.DataFrame({"user_id": ["u1"], "feature": ["z"]}))
    assert store.get_user("u1")[0] == {"z": 1.0}
    assert store.get_user("u2")[0] == {"a": 2.0}
    assert store.bulk_load_interactions(inter.iloc[:0]) == 0


def test_bulk_and_single_interaction_writes_store_identical_entries(store):
    record = {"user_id": "u:1", "item_id": 7, "weight": 0.1, "timestamp": 1_700_000_000}
    store.add_interactions([record, dict(record, timestamp=1.5)])
    store.bulk_load_interactions(pd.DataFrame([record]))
    store.bulk_load_interactions(pd.DataFrame([dict(record, timestamp=1.5)]))
    entries = log_entries(store)
    assert entries[0] == entries[2] == {"user_id": "u:1", "item_id": "7", "weight": "0.1",
                                        "timestamp": "1700000000"}
    assert entries[1] == entries[3] == {"user_id": "u:1", "item_id": "7", "weight": "0.1", "timestamp": "1.5"}
    assert store.client.smembers(store.keys.user_seen("u:1")) == {"7"}


def test_snapshot_equals_what_was_loaded(store):
    world = make_world(600, 300, seed=7)  # ~14K interactions: more than one XRANGE chunk
    store.bulk_load_user_features(world.user_features)
    store.bulk_load_item_features(world.item_features)
    store.bulk_load_interactions(world.interactions)
    snap = store.snapshot()
    assert isinstance(snap, Snapshot)
    assert len(world.interactions) > snapshot_module.XRANGE_CHUNK
    pd.testing.assert_frame_equal(sort_frame(snap.interactions, ["user_id", "timestamp", "item_id"]),
                                  sort_frame(world.interactions, ["user_id", "timestamp", "item_id"]))
    pd.testing.assert_frame_equal(sort_frame(snap.user_features, ["user_id", "feature"]),
                                  sort_frame(world.user_features, ["user_id", "feature"]))
    pd.testing.assert_frame_equal(sort_frame(snap.item_features, ["item_id", "feature"]),
                                  sort_frame(world.item_features, ["item_id", "feature"]))
    # each user's entries keep the order they were loaded in (a user's entries share one partition)
    for user in world.interactions["user_id"].unique()[:50]:
        assert snap.interactions.loc[snap.interactions["user_id"] == user, "item_id"].tolist() == \
            world.interactions.loc[world.interactions["user_id"] == user, "item_id"].tolist()
    # the cursor names the newest entry of every partition
    newest = [(store.client.xrevrange(k, count=1) or [["0-0"]])[0][0] for k in store.keys.interactions.keys]
    assert snap.last_id == ",".join(newest)
    assert store.snapshot().interactions.equals(snap.interactions)  # the same log reads the same frame
    # directly usable for training
    model = LFMRecommender(no_components=8, random_state=0).fit(
        snap.interactions, snap.user_features, snap.item_features, epochs=1)
    assert model.n_users == world.interactions["user_id"].nunique()


def test_snapshot_after_id_returns_only_later_interactions(store, monkeypatch):
    monkeypatch.setattr(snapshot_module, "XRANGE_CHUNK", 3)  # exercise chunk boundaries
    assert store.snapshot().last_id is None
    store.add_interactions([{"user_id": "u", "item_id": f"i{k}", "timestamp": k} for k in range(6)])
    store.add_interactions([{"user_id": f"w{k}", "item_id": "i1", "timestamp": 10 + k} for k in range(5)])
    first = store.snapshot()
    assert first.interactions.loc[first.interactions["user_id"] == "u", "item_id"].tolist() == [
        f"i{k}" for k in range(6)]  # 6 = two full chunks of one partition
    assert sorted(first.interactions["timestamp"]) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14]
    store.add_interactions([{"user_id": f"v{k}", "item_id": "i2", "timestamp": 100 + k} for k in range(4)])
    store.add_interactions([{"user_id": "u", "item_id": "i9", "timestamp": 104}])
    later = store.snapshot(after_id=first.last_id)
    assert sorted(later.interactions["user_id"]) == ["u", "v0", "v1", "v2", "v3"]
    assert sorted(later.interactions["timestamp"]) == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert later.last_id != first.last_id
    nothing = store.snapshot(after_id=later.last_id)
    assert len(nothing.interactions) == 0 and nothing.last_id == later.last_id
    assert list(nothing.interactions.columns) == ["user_id", "item_id", "weight", "timestamp"]
    for bad in ("1700000000000-0", ",".join(["0-0"] * 15), ",".join(["x"] * 16)):
        with pytest.raises(ValueError, match="cursor"):
            store.snapshot(after_id=bad)


def test_snapshot_tolerates_log_entries_written_by_other_tools(store):
    stream = store.keys.log_partition("u1")
    store.add_interactions([{"user_id": "u1", "item_id": "i1", "weight": 2.0, "timestamp": 5}])
    store.client.xadd(stream, {"user_id": "u2", "item_id": "i2"})  # no weight, no timestamp
    store.client.xadd(stream, {"user_id": "u3", "item_id": "i3", "weight": "lots"})  # unusable
    store.client.xadd(stream, {"user_id": "u4"})  # no item
    snap = store.snapshot()
    assert snap.interactions["user_id"].tolist() == ["u1", "u2"]
    assert snap.interactions["weight"].tolist() == [2.0, 1.0]
    assert snap.interactions["timestamp"].iloc[0] == 5.0
    assert abs(snap.interactions["timestamp"].iloc[1] - time.time()) < 60  # from the stream id
    part = store.keys.interactions.keys.index(stream)
    # skipped entries still count as read
    assert snap.last_id.split(",")[part] == store.client.xrevrange(stream, count=1)[0][0]


def test_corrupt_hash_values_are_skipped_not_fatal(store):
    store.set_user_features("u1", {"a": 1.0})
    store.client.hset(store.keys.user_features("u1"), mapping={"bad": "oops", "nan": "nan"})
    assert store.get_user("u1")[0] == {"a": 1.0}


# ---------------------------------------------------------------------- unavailability


def test_from_url_configures_pool_timeouts_and_retry(redis_url):
    s = RedisFeatureStore.from_url(redis_url, "p:", socket_timeout=0.3, connect_timeout=0.2, retries=4,
                                   max_connections=7)
    kwargs = connection_kwargs(s.client)
    assert kwargs["decode_responses"] is True
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.3, 0.2)
    assert kwargs["health_check_interval"] == 30
    assert s.ping()
    if s.cluster:  # redis-py's cluster client: one pool per node, retries at the cluster level
        assert s.client.retry.get_retries() == 4 and kwargs["max_connections"] == 7
        node = primaries(s.client)[0].connection_pool
        assert node.max_connections == 7 and node.connection_kwargs["socket_timeout"] == 0.3
        return
    assert kwargs["retry"].get_retries() == 4
    assert s.client.connection_pool.max_connections == 7
    with pytest.raises(ValueError):
        RedisFeatureStore(redis.Redis.from_url(redis_url), "p:")  # bytes replies would corrupt ids


PUBLIC_CALLS = [
    ("set_user_features", lambda s: s.set_user_features("u", {"a": 1.0})),
    ("set_item_features", lambda s: s.set_item_features("i", {"a": 1.0})),
    ("add_interactions", lambda s: s.add_interactions([{"user_id": "u", "item_id": "i"}])),
    ("get_user", lambda s: s.get_user("u")),
    ("get_item_features", lambda s: s.get_item_features(["i"])),
    ("catalogue", lambda s: s.catalogue()),
    ("catalogue_size", lambda s: s.catalogue_size()),
    ("item_changes_since", lambda s: s.item_changes_since(0)),
    ("counts", lambda s: s.counts()),
    ("is_empty", lambda s: s.is_empty()),
    ("bulk_load_user_features", lambda s: s.bulk_load_user_features(
        pd.DataFrame({"user_id": ["u"], "feature": ["a"]}))),
    ("bulk_load_item_features", lambda s: s.bulk_load_item_features(
        pd.DataFrame({"item_id": ["i"], "feature": ["a"]}))),
    ("bulk_load_interactions", lambda s: s.bulk_load_interactions(
        pd.DataFrame({"user_id": ["u"], "item_id": ["i"]}))),
    ("snapshot", lambda s: s.snapshot()),
]


@pytest.mark.parametrize("scheme", ["redis://{}/0", "redis+cluster://{}"], ids=["single", "cluster"])
def test_unreachable_redis_raises_store_unavailable_quickly(scheme):
    port = free_port()  # nothing listens there
    s = RedisFeatureStore.from_url(scheme.format(f"127.0.0.1:{port}"), "t:", socket_timeout=0.2,
                                   connect_timeout=0.2, retries=2)
    assert s.ping() is False
    for name, call in PUBLIC_CALLS:
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError) as info:
            call(s)
        elapsed = time.monotonic() - start
        assert elapsed < 3.0, f"{name} took {elapsed:.2f}s to fail"
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError), name
        assert f"127.0.0.1:{port}" in str(info.value) and name in str(info.value)


@pytest.mark.parametrize("reply", [None, b"HTTP/1.1 400 Bad Request\r\n\r\n"], ids=["silent", "not-redis"])
def test_server_that_hangs_or_is_not_redis_raises_store_unavailable(reply):
    # a listener that accepts and then never answers (socket timeout path), or answers garbage
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        """Accept connections; answer each with ``reply`` (or nothing)."""
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)
            if reply is not None:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    try:
        for interval, bound in ((30, 3.0), (0, 1.0)):  # bounds: (retries+1)**2 and (retries+1) timeouts, + slack
            s = RedisFeatureStore.from_url(url, "t:", socket_timeout=0.1, connect_timeout=0.1, retries=2,
                                           health_check_interval=interval)
            start = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                s.get_user("u1")
            assert time.monotonic() - start < bound, f"health_check_interval={interval}"
            assert s.ping() is False
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_store_recovers_when_redis_comes_back(tmp_path):
    port = free_port()
    s = RedisFeatureStore.from_url(f"redis://127.0.0.1:{port}/0", "t:", socket_timeout=0.2,
                                   connect_timeout=0.2, retries=2)
    server = LocalRedis(tmp_path / "r", port=port).start()
    try:
        s.set_user_features("u1", {"a": 1.0})
        assert s.get_user("u1")[0] == {"a": 1.0}
        server.stop()  # pooled connections are now dead
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            s.get_user("u1")
        assert time.monotonic() - start < 3.0
        server.start()
        start = time.monotonic()
        assert s.get_user("u1") == (None, set(), set())  # same store object, new server (no persistence)
        assert time.monotonic() - start < 3.0
        s.set_user_features("u1", {"b": 2.0})
        assert s.get_user("u1")[0] == {"b": 2.0}
    finally:
        server.stop()


# ---------------------------------------------------------------------- exactly-once interaction writes


class ReplyDroppingProxy:
    """A TCP proxy to Redis that, once armed, lets the next matching command run on the server but closes
    the client's connection instead of relaying the reply: the "timeout after Redis wrote" case."""

    def __init__(self, host: str, port: int, match: bytes):
        self.target, self.match = (host, port), match
        self.armed = threading.Event()
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            pending = threading.Event()  # this connection sent the matching command
            threading.Thread(target=self._up, args=(client, server, pending), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, pending), daemon=True).start()

    def _up(self, client, server, pending) -> None:
        try:
            while data := client.recv(65536):
                if self.armed.is_set() and self.match in data:
                    pending.set()
                server.sendall(data)
        except OSError:
            pass

    def _down(self, server, client, pending) -> None:
        try:
            while data := server.recv(65536):
                if pending.is_set() and not data.startswith(b"-"):  # an error reply (NOSCRIPT) goes through
                    self.armed.clear()
                    self.dropped += 1
                    client.close()
                    server.close()
                    return
                client.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dropping_store(single_redis_url):
    """A store whose connections go through a ReplyDroppingProxy armed for the write script (a single Redis:
    a cluster's nodes tell clients their own addresses, which a proxy cannot stand in for)."""
    import uuid

    key_prefix = f"test:{uuid.uuid4().hex[:12]}:"
    target = redis.Redis.from_url(single_redis_url).connection_pool.connection_kwargs
    proxy = ReplyDroppingProxy(target.get("host", "localhost"), target.get("port", 6379), b"EVALSHA")
    db = target.get("db", 0)
    s = RedisFeatureStore.from_url(f"redis://127.0.0.1:{proxy.port}/{db}", key_prefix, socket_timeout=5)
    yield s, proxy
    s.close()
    proxy.close()
    delete_prefix(single_redis_url, key_prefix)


def stream_length(store: RedisFeatureStore) -> int:
    return log_length(store)


BATCH = [{"user_id": "u1", "item_id": "i1", "weight": 2}, {"user_id": "u2", "item_id": "i2"}]


def test_a_retry_after_the_reply_was_lost_does_not_append_twice(dropping_store):
    store, proxy = dropping_store
    store.add_interactions([{"user_id": "u0", "item_id": "i0"}])  # the script is loaded; nothing dropped
    assert proxy.dropped == 0 and stream_length(store) == 1
    proxy.armed.set()
    assert store.add_interactions(BATCH) == 2  # the reply never came: redis-py retried on a new connection
    assert proxy.dropped == 1
    assert stream_length(store) == 3
    assert store.get_user("u1")[1] == {"i1"}


def test_a_bulk_load_batch_retried_after_a_lost_reply_is_appended_once(dropping_store):
    store, proxy = dropping_store
    proxy.armed.set()
    frame = pd.DataFrame({"user_id": [f"u{k}" for k in range(10)], "item_id": [f"i{k}" for k in range(10)]})
    assert store.bulk_load_interactions(frame, batch=4) == 10
    assert proxy.dropped == 1
    assert stream_length(store) == 10
    assert sorted(store.snapshot().interactions["user_id"]) == sorted(frame["user_id"])


def test_the_same_idempotency_key_writes_once_and_replays_the_count(store):
    first = store.add_interactions_once(BATCH, idempotency_key="req-1")
    assert (first.written, first.replayed) == (2, False)
    # a client retry: same records, no timestamps (stamped by the server, so they differ), 2 == 2.0
    again = store.add_interactions_once([dict(BATCH[0], weight=2.0), BATCH[1]], idempotency_key="req-1")
    assert (again.written, again.replayed) == (2, True)
    assert stream_length(store) == 2
    other = store.add_interactions_once(BATCH, idempotency_key="req-2")  # another key is another write
    assert (other.written, other.replayed) == (2, False)
    assert stream_length(store) == 4
    guard = store.keys.once_key("req-1")
    assert 86_000 < store.client.ttl(guard) <= 86_400


def test_a_retry_with_the_key_writes_exactly_what_a_failed_attempt_left_out(store):
    """A batch whose write failed part way (on a cluster, the script call of one slot never ran: a node was
    down; on one Redis the single call is all or nothing) is completed by a retry with the same key: every
    record ends up in the log exactly once, and the next retry writes nothing."""
    records = [{"user_id": f"u{k}", "item_id": f"i{k}", "timestamp": k} for k in range(40)]
    assert not store.add_interactions_once(records, idempotency_key="half").replayed
    # undo what one script call wrote: its log entries, its users' log lists and its guard
    lost = store.keys.log_partition("u0")
    parts = [lost] if store.cluster else store.keys.interactions.keys
    guards = [k for k in keys_of(store) if k.startswith(store.prefix + "once:{") and slot_of(k) == slot_of(lost)] \
        if store.cluster else [store.keys.once_key("half")]
    assert len(guards) == 1
    for key in parts + guards + [store.keys.user_log(r["user_id"]) for r in records
                                 if store.keys.log_partition(r["user_id"]) in parts]:
        store.client.delete(key)
    assert log_length(store) == 40 - sum(store.keys.log_partition(r["user_id"]) in parts for r in records)
    again = store.add_interactions_once(records, idempotency_key="half")
    assert (again.written, again.replayed) == (40, False)
    assert sorted(e["user_id"] for e in log_entries(store)) == sorted(r["user_id"] for r in records)
    assert store.describe_user("u0")["interactions"] == 1 and store.get_user("u0")[1] == {"i0"}
    third = store.add_interactions_once(records, idempotency_key="half")
    assert (third.written, third.replayed) == (40, True) and log_length(store) == 40


@pytest.mark.parametrize("changed", [
    [BATCH[0]],  # fewer records
    [BATCH[0], dict(BATCH[1], item_id="i3")],  # another item
    [BATCH[0], dict(BATCH[1], weight=0.5)],  # another weight
    [BATCH[0], dict(BATCH[1], timestamp=5)],  # an explicit timestamp where there was none
    [BATCH[1], BATCH[0]],  # another order
])
def test_reusing_a_key_for_other_records_is_refused_and_writes_nothing(store, changed):
    store.add_interactions_once(BATCH, idempotency_key="req-1")
    before = keys_of(store), stream_length(store), store.get_user("u2")
    with pytest.raises(IdempotencyConflictError, match="req-1"):
        store.add_interactions_once(changed, idempotency_key="req-1")
    assert (keys_of(store), stream_length(store), store.get_user("u2")) == before


def test_an_expired_key_writes_again(store):
    store.add_interactions_once(BATCH, idempotency_key="short", ttl=1)
    time.sleep(1.2)
    assert not store.add_interactions_once(BATCH, idempotency_key="short", ttl=1).replayed
    assert stream_length(store) == 4


@pytest.mark.parametrize("key", ["", " ", "a b", "caf\u00e9", "tab\there", "x" * 256, 5, None.__class__])
def test_invalid_idempotency_keys_raise_and_write_nothing(store, key):
    with pytest.raises(ValueError, match="idempotency key"):
        store.add_interactions_once(BATCH, idempotency_key=key)
    assert keys_of(store) == []


def test_a_call_without_a_key_guards_only_its_own_retries(store):
    store.add_interactions(BATCH)
    store.add_interactions(BATCH)  # two calls are two writes
    assert stream_length(store) == 4
    guards = [k for k in keys_of(store) if k.startswith(store.prefix + "once:") and ":call:" in k]
    # one guard per call; on a cluster one per slot the call appended to the log in
    per_call = len({slot_of(store.keys.log_partition(r["user_id"])) for r in BATCH}) if store.cluster else 1
    assert len(guards) == 2 * per_call
    assert all(0 < store.client.ttl(k) <= CALL_GUARD_TTL for k in guards)


# ---------------------------------------------------------------------- interaction log retention


def test_a_length_limit_keeps_the_newest_interactions_and_every_seen_item(redis_url, key_prefix):
    s = RedisFeatureStore.from_url(redis_url, key_prefix, max_interactions=250)  # 16 per partition
    users = [f"u{k}" for k in range(40)]
    try:
        for batch in range(20):  # 1,000 interactions through the request path, 50 at a time
            s.add_interactions([{"user_id": users[(batch * 50 + k) % 40], "item_id": f"i{batch * 50 + k}",
                                 "timestamp": batch * 50 + k} for k in range(50)])
        assert stream_length(s) <= 16 * 16  # at most ceil(250 / 16) in each partition
        kept = s.snapshot().interactions
        for part in s.keys.interactions.keys:  # each partition keeps exactly its newest 16 entries
            mine = [u for u in users if s.keys.log_partition(u) == part]
            written = sorted(t for t in range(1000) if users[t % 40] in mine)
            held = sorted(kept.loc[kept["user_id"].isin(mine), "timestamp"].astype(int))
            assert held == written[-16:], part
        assert set().union(*(s.get_user(u)[1] for u in users)) == {f"i{k}" for k in range(1000)}
        frame = pd.DataFrame({"user_id": ["b"] * 600, "item_id": [f"b{k}" for k in range(600)],
                              "timestamp": range(1000, 1600)})
        s.bulk_load_interactions(frame, batch=200)  # bulk loads trim too
        b_part = s.keys.log_partition("b")
        assert s.client.xlen(b_part) == 16
        assert s.snapshot().interactions.query("user_id == 'b'")["timestamp"].tolist() == list(range(1584, 1600))
        assert s.client.llen(s.keys.user_log("b")) == 600  # the log list keeps 2 x 16 + 1000 at most
    finally:
        s.close()


def test_without_a_limit_nothing_is_trimmed(store):
    for _ in range(3):
        store.add_interactions([{"user_id": "u", "item_id": f"i{k}"} for k in range(200)])
    assert stream_length(store) == 600


@pytest.mark.parametrize("bad", [-1, 1.5, True, "100"])
def test_a_bad_length_limit_is_refused(redis_url, key_prefix, bad):
    with pytest.raises(ValueError, match="max_interactions"):
        RedisFeatureStore.from_url(redis_url, key_prefix, max_interactions=bad)
