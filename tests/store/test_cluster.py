"""A Redis Cluster changing under the store and the user cache: a slot migrating between masters (ASK, then
MOVED), and a master failing over to its replica. A private cluster of 3 masters with a replica each."""

from __future__ import annotations

import time

import pytest
import redis

from recommender.errors import StoreUnavailableError
from recommender.localredis import LocalRedisCluster
from recommender.store import RedisFeatureStore
from recommender.store.keys import slot_of
from recommender.store.usercache import UserCache


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """3 masters, a replica each; a master silent for 1 s is failed over."""
    nodes = LocalRedisCluster(tmp_path_factory.mktemp("cluster-ha"), replicas=1, node_timeout=1000).start()
    yield nodes
    nodes.stop()


def _eventually(check, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except StoreUnavailableError:
            value = None
        if value:
            return value
        time.sleep(interval)
    return check()


def _admin(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True, socket_timeout=5)


def _owner(cluster: LocalRedisCluster, slot: int):
    """(node, its id) of the master that serves ``slot``, by the cluster's own slot map."""
    with _admin(cluster.primaries()[0].port) as admin:
        for start, end, master, *_ in admin.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in cluster.nodes if n.port == int(master[1])), master[2]
    raise AssertionError(f"no master serves slot {slot}")


@pytest.fixture
def parts(cluster):
    """(store, writer, cache) on the private cluster under a fresh prefix."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:6]}:"
    store = RedisFeatureStore.from_url(cluster.url, prefix=prefix, socket_timeout=0.5, connect_timeout=0.5)
    writer = RedisFeatureStore.from_url(cluster.url, prefix=prefix, socket_timeout=2, connect_timeout=0.5)
    cache = UserCache(store, maxsize=100, ttl=60, ping_interval=0.2, retry_interval=0.1).start()
    assert cache.wait_live(10)
    yield store, writer, cache
    cache.stop()
    store.close()
    writer.close()


def test_reads_and_the_cache_follow_a_slot_migrating_between_masters(cluster, parts):
    store, writer, cache = parts
    user = "moving-user"
    writer.set_user_features(user, {"a": 1.0})
    writer.add_interactions([{"user_id": user, "item_id": "i1"}, {"user_id": user, "item_id": "i2", "weight": -1}])
    expected = store.get_user(user)
    assert expected == ({"a": 1.0}, {"i1", "i2"}, {"i2"}) and set(expected.recent) == {"i1"}
    assert cache.get_user(user) == expected and cache.get_user(user) == expected and cache.hits >= 1
    keys = store.keys
    slot = slot_of(keys.user_features(user))
    source, source_id = _owner(cluster, slot)
    target = next(n for n in cluster.primaries() if n.port != source.port)
    with _admin(target.port) as t, _admin(source.port) as s:
        target_id = t.execute_command("CLUSTER", "MYID")
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        # half the user's keys move: features and seen set answer ASK, the others are still on the source
        s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS",
                          keys.user_features(user), keys.user_seen(user))
        during = store.get_user(user)
        assert during == expected and during.recent == expected.recent
        assert cache.get_user(user) == expected  # invalidated by the move (DEL here, RESTORE there), re-read
        s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS",
                          keys.user_negative(user), keys.user_recent(user))
        for node in cluster.primaries():
            with _admin(node.port) as a:
                a.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    # the store's map still names the source: MOVED, followed
    after = store.get_user(user)
    assert after == expected and after.recent == expected.recent
    assert cache.get_user(user) == expected
    # a write now lands on the new owner, which the cache also tracks: the next read sees it, never the old set
    writer.set_user_features(user, {"b": 2.0})
    assert cache.get_user(user)[0] == {"b": 2.0}
    assert _eventually(lambda: any(slot in range(start, end + 1) and master.endswith(f":{target.port}")
                                   for start, end, master in cache._slots or ()), 5)  # noqa: SLF001
    writer.add_interactions([{"user_id": user, "item_id": "i3"}])
    assert cache.get_user(user)[1] == {"i1", "i2", "i3"}


def test_a_master_failing_over_is_followed_by_reads_writes_and_the_cache(cluster, parts):
    store, writer, cache = parts
    user = "failover-user"
    writer.set_user_features(user, {"a": 1.0})
    writer.add_interactions([{"user_id": user, "item_id": "i1"}])
    assert cache.get_user(user) == ({"a": 1.0}, {"i1"}, set())
    victim, _ = _owner(cluster, slot_of(store.keys.user_features(user)))
    with _admin(victim.port) as a:
        a.execute_command("WAIT", 1, 2000)  # the replica has every write (replication is asynchronous)
    old_masters = {t.name for t in cache._trackers}  # noqa: SLF001
    victim.process.kill()  # SIGKILL: no goodbye to the cluster
    victim.process.wait()
    # the cache stops serving at once: its connection to the dead master is gone
    assert _eventually(lambda: not cache.live, 2)
    started = time.monotonic()
    unavailable = 0
    while time.monotonic() - started < 20:
        try:
            record = store.get_user(user)
            break
        except StoreUnavailableError:  # until the replica is promoted; never a wrong answer
            unavailable += 1
            time.sleep(0.1)
    else:
        raise AssertionError("reads did not come back within 20 s of the failover")
    assert record == ({"a": 1.0}, {"i1"}, set())
    assert cache.get_user(user) == record  # bypassed or fresh, never stale
    assert _eventually(lambda: cache.live, 10), "tracking did not resume on the new master"
    new_masters = {t.name for t in cache._trackers}  # noqa: SLF001
    assert len(new_masters) == 3 and f"127.0.0.1:{victim.port}" not in new_masters and new_masters != old_masters
    assert _eventually(lambda: writer.set_user_features(user, {"b": 2.0}) is None, 10)
    assert cache.get_user(user)[0] == {"b": 2.0}
    assert cache.get_user(user)[0] == {"b": 2.0} and cache.hits >= 1  # cached again, and current
    writer.add_interactions([{"user_id": user, "item_id": "i2"}], idempotency_key="after-failover")
    assert cache.get_user(user)[1] == {"i1", "i2"}


def _spy_direct(monkeypatch) -> list:
    """(calls sent, calls left for redis-py's pipeline) of every per-node direct send (the thing under test
    runs as is; the spy only records what it returned)."""
    from recommender.store import connection

    seen: list = []
    real = connection.LuaScript._many_direct

    def spy(self, client, cluster_, calls, connections, results):
        left = real(self, client, cluster_, calls, connections, results)
        seen.append((len(calls), len(left)))
        return left

    monkeypatch.setattr(connection.LuaScript, "_many_direct", spy)
    return seen


def _frame(users: list[str], rows: int, start: float):
    import pandas as pd

    return pd.DataFrame({"user_id": [users[i % len(users)] for i in range(rows)],
                         "item_id": [f"i{(i * 7) % 97}" for i in range(rows)], "weight": 1.0,
                         "timestamp": [start + i for i in range(rows)]})


def test_bulk_interactions_go_to_each_master_directly_and_follow_a_stale_slot_map(cluster, parts, monkeypatch):
    from tests.helpers import log_length

    store, writer, _ = parts
    seen = _spy_direct(monkeypatch)
    users = [f"bulk-{u}" for u in range(300)]
    frame = _frame(users, 2000, 1.7e9)
    assert writer.bulk_load_interactions(frame, batch=500, progress=False) == 2000
    assert len(seen) == 4 and all(left == 0 for _, left in seen) and all(sent > 300 for sent, _ in seen)
    assert log_length(store) == 2000
    for user in users[::37]:
        assert store.get_user(user).seen == set(frame.loc[frame["user_id"] == user, "item_id"])
    # the writer's map sends one user's slot to the wrong master: it answers MOVED, the pipeline follows it
    user = users[5]
    slot = slot_of(store.keys.user_seen(user))
    manager = writer.client.resolve().nodes_manager
    right = manager.slots_cache[slot]
    wrong = next(n for n in manager.nodes_cache.values() if n.server_type == "primary" and n.name != right[0].name)
    manager.slots_cache[slot] = [wrong]
    later = _frame([user, users[6]], 10, 1.8e9).assign(item_id=[f"late-{i}" for i in range(10)])
    assert writer.bulk_load_interactions(later, batch=500, progress=False) == 10
    assert seen[-1][1] >= 1  # left for the pipeline
    assert manager.slots_cache[slot][0].name == right[0].name  # the map was corrected by the MOVED reply
    assert log_length(store) == 2010  # written once
    assert {f"late-{i}" for i in range(0, 10, 2)} <= store.get_user(user).seen


def test_bulk_loads_reload_a_flushed_script_and_survive_a_dropped_connection(cluster, parts, monkeypatch):
    from recommender.store import connection
    from tests.helpers import log_length

    store, writer, _ = parts
    seen = _spy_direct(monkeypatch)
    users = [f"flush-{u}" for u in range(50)]
    writer.bulk_load_interactions(_frame(users[:1], 1, 1.6e9), batch=200, progress=False)  # loads the script
    flushed = cluster.primaries()[0]  # a restarted or new master has no scripts: NOSCRIPT, loaded, sent again
    with _admin(flushed.port) as admin:
        admin.script_flush()
    loads = []
    monkeypatch.setattr(writer.client, "script_load", lambda source, real=writer.client.script_load:
                        loads.append(source) or real(source), raising=False)
    assert writer.bulk_load_interactions(_frame(users, 200, 1.7e9), batch=200, progress=False) == 200
    assert seen[-1][1] == 0 and len(loads) == 1 and log_length(store) == 201
    # a connection lost after the node ran the calls, with 3 of its replies read: the other calls go through
    # the pipeline again, whose guards keep each log entry written once; the connection is dropped
    real_get = connection.ThreadConnections.get
    failed = []

    def get(self, node=None):
        conn = real_get(self, node)
        if not failed and "read_response" not in conn.__dict__:
            reads = []

            def read_response(*args, **kwargs):
                answer = type(conn).read_response(conn, *args, **kwargs)
                reads.append(answer)
                if len(reads) == 3:
                    failed.append(conn)
                    del conn.read_response  # only this once
                    raise redis.exceptions.ConnectionError("replies lost (test)")
                return answer

            conn.read_response = read_response
        return conn

    monkeypatch.setattr(connection.ThreadConnections, "get", get)
    assert writer.bulk_load_interactions(_frame(users, 200, 1.8e9).assign(item_id="again"), batch=200,
                                         progress=False) == 200
    assert failed and not failed[0].is_connected
    assert failed and seen[-1][1] > 0
    assert log_length(store) == 401
    assert all("again" in store.get_user(u).seen for u in users)


@pytest.fixture(scope="module")
def plain_cluster(tmp_path_factory):
    """3 masters, no replicas (a stalled master stays the owner of its slots); a master silent for 30 s
    would be marked failed (never here: the cluster must stay up while one is stopped for a second)."""
    import os
    import signal

    nodes = LocalRedisCluster(tmp_path_factory.mktemp("cluster-plain"), node_timeout=30_000).start()
    yield nodes
    for node in nodes.nodes:  # a stopped process would not end on SIGTERM
        if node.process is not None and node.process.poll() is None:
            os.kill(node.process.pid, signal.SIGCONT)
    nodes.stop()


def test_a_stalled_master_opens_only_its_own_circuit(plain_cluster):
    import os
    import signal

    from recommender.store.breaker import CircuitBreaker, GuardedReads

    store = RedisFeatureStore.from_url(plain_cluster.url, prefix="t-breaker:", socket_timeout=0.3, connect_timeout=0.3)
    reads = GuardedReads(store, CircuitBreaker(60.0))
    users: dict[int, str] = {}  # master port -> a user it serves
    for n in range(200):
        node, _ = _owner(plain_cluster, slot_of(store.keys.user_features(f"b{n}")))
        users.setdefault(node.port, f"b{n}")
    assert len(users) == 3
    for user in users.values():
        store.set_user_features(user, {"f": 1.0})
        assert reads.get_user(user)[0] == {"f": 1.0}
    stalled_port, stalled_user = next(iter(users.items()))
    stalled = next(n for n in plain_cluster.nodes if n.port == stalled_port)
    os.kill(stalled.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailableError):
            reads.get_user(stalled_user)  # waits out its timeout and retries, then opens that master's circuit
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            reads.get_user(stalled_user)
        assert time.monotonic() - started < 0.1  # failed fast
        for port, user in users.items():
            if port != stalled_port:  # the other masters' users are still read, not degraded
                assert reads.get_user(user)[0] == {"f": 1.0}
                assert reads.breaker_for(user).state == "closed"
        assert reads.breaker_for(stalled_user).state == "open" and reads.breaker.state == "closed"
    finally:
        os.kill(stalled.process.pid, signal.SIGCONT)
        store.close()


def test_direct_sends_encode_like_redis_py_and_come_in_pieces():
    """What the per-node writes send is byte for byte what redis-py would, cut into ~64 KB pieces (the socket
    timeout applies per piece written, as in redis-py's own pipeline, not to a whole node's batch)."""
    from redis.connection import PythonRespSerializer

    from recommender.store.connection import LuaScript

    script = LuaScript("return 1")
    calls = [([f"{{u{n}}}:seen", f"{{u{n}}}:recent"], ["item-é", 1.5, n, 0.1 + 0.2, 1.7e9 + n / 7, "x" * (n % 300)])
             for n in range(3000)]
    pieces = script._packed(calls, list(range(len(calls))))
    assert len(pieces) > 10 and all(len(p) < 65536 + 1024 for p in pieces)
    encoder = redis.connection.Encoder("utf-8", "strict", False)
    serializer = PythonRespSerializer(1000, encoder.encode)
    expected = b"".join(b"".join(serializer.pack("EVALSHA", script.sha, len(keys), *keys, *args))
                        for keys, args in calls)
    assert b"".join(pieces) == expected
