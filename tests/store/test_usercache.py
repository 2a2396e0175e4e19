"""UserCache: answers equal the store's, hits skip Redis, and every kind of change to a user reaches it.

Real Redis throughout: the shared tests on a single Redis and on a Redis Cluster (tracking on every
master). Tests that flush, pause or kill connections run on a private redis-server (never on a shared
REDIS_URL); the cluster's topology changes (resharding, failover) are in test_cluster.py.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis

from recommender.localredis import LocalRedis
from recommender.store import RedisFeatureStore
from recommender.store.usercache import UserCache

from tests.helpers import both_redis_url, command_calls

redis_url = both_redis_url()


def _reads(store: RedisFeatureStore) -> int:
    """HGETALL calls the servers have executed (one per get_user that reached Redis)."""
    return command_calls(store, "hgetall")


def _eventually(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def setup(request, redis_url, key_prefix):
    """(store, cache, a second store as another writer) on the shared test Redis, both protocols."""
    store = RedisFeatureStore.from_url(redis_url, prefix=key_prefix, protocol=request.param)
    writer = RedisFeatureStore.from_url(redis_url, prefix=key_prefix)
    cache = UserCache(store, maxsize=100, ttl=60).start()
    assert cache.wait_live(5), "tracking was not established"
    yield store, cache, writer
    cache.stop()
    store.close()
    writer.close()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    server = LocalRedis(tmp_path_factory.mktemp("usercache-redis")).start()
    yield server
    server.stop()


def test_hits_skip_redis_and_equal_the_store(setup):
    store, cache, writer = setup
    if store.cluster:
        assert len(cache._trackers) == 3  # noqa: SLF001 - one invalidation connection per master
    for u in range(20):
        writer.set_user_features(f"u{u}", {"age:30": 1.0, f"f{u}": 0.5})
        writer.add_interactions([{"user_id": f"u{u}", "item_id": f"i{k}"} for k in range(u % 5)])
    expected = {f"u{u}": store.get_user(f"u{u}") for u in range(20)}
    expected["nobody"] = (None, set(), set())
    first = {u: cache.get_user(u) for u in expected}
    before = _reads(store)
    second = {u: cache.get_user(u) for u in expected}
    assert first == second == expected
    assert _reads(store) == before, "cached users were read from Redis again"
    assert cache.hits == len(expected) and cache.misses == len(expected)


def test_answers_are_copies(setup):
    _, cache, writer = setup
    writer.set_user_features("u1", {"a": 1.0})
    features, seen, _ = cache.get_user("u1")
    features["b"] = 2.0
    seen.add("x")
    assert cache.get_user("u1") == ({"a": 1.0}, set(), set())


def test_every_kind_of_change_invalidates(setup):
    """Feature PUTs, interactions (Lua), deletes and expiry by another client: the next read sees them."""
    store, cache, writer = setup
    assert cache.get_user("u1") == (None, set(), set())  # a miss for an unknown user is cached too
    writer.set_user_features("u1", {"a": 1.0})
    assert _eventually(lambda: cache.get_user("u1") == ({"a": 1.0}, set(), set()))
    writer.add_interactions([{"user_id": "u1", "item_id": "i1"}, {"user_id": "u1", "item_id": "i2"}])
    assert _eventually(lambda: cache.get_user("u1") == ({"a": 1.0}, {"i1", "i2"}, set()))
    writer.set_user_features("u1", {})
    assert _eventually(lambda: cache.get_user("u1") == ({}, {"i1", "i2"}, set()))
    writer.client.delete(writer.keys.user_seen("u1"))
    assert _eventually(lambda: cache.get_user("u1") == ({}, set(), set()))
    writer.set_user_features("u1", {"b": 2.0})
    assert _eventually(lambda: cache.get_user("u1")[0] == {"b": 2.0})
    writer.client.pexpire(writer.keys.user_features("u1"), 50)
    assert _eventually(lambda: cache.get_user("u1") == (None, set(), set()))
    assert cache.invalidations >= 6


def test_ids_with_colons_and_other_prefixes(setup):
    """Keys are mapped back to users by their suffix; other keys and other users' keys leave entries alone."""
    store, cache, writer = setup
    for uid in ("a:seen", "a", "b:features"):
        writer.set_user_features(uid, {"x": 1.0})
        cache.get_user(uid)
    writer.set_user_features("a:seen", {"y": 1.0})
    assert _eventually(lambda: cache.get_user("a:seen") == ({"y": 1.0}, set(), set()))
    writer.client.set(writer.keys.users.keys[0], "not a user key")  # outside the tracked prefix
    before = _reads(store)
    assert cache.get_user("a") == ({"x": 1.0}, set(), set())
    assert cache.get_user("b:features") == ({"x": 1.0}, set(), set())
    assert _reads(store) == before


def test_read_after_write_without_the_background_thread(redis_url, key_prefix):
    """The request path itself applies pending invalidations: no background thread runs here."""
    store = RedisFeatureStore.from_url(redis_url, prefix=key_prefix)
    writer = RedisFeatureStore.from_url(redis_url, prefix=key_prefix)
    cache = UserCache(store, maxsize=100, ttl=60)
    cache._connect()  # noqa: SLF001 - tracking only, no thread
    try:
        immediate = 0
        for k in range(100):
            cache.get_user("u1")
            writer.set_user_features("u1", {"v": float(k)})
            if cache.get_user("u1")[0] == {"v": float(k)}:
                immediate += 1
            else:
                assert _eventually(lambda: cache.get_user("u1")[0] == {"v": float(k)}, 2)
        # Redis writes the invalidation in the same event-loop pass as the writer's reply
        assert immediate >= 90, f"only {immediate}/100 reads right after a write were fresh"
    finally:
        cache.stop()
        store.close()
        writer.close()


def test_a_fetch_racing_a_write_is_not_cached(setup):
    """A write that lands between Redis's answer and the cache storing it must not leave a stale entry."""
    store, cache, writer = setup
    writer.set_user_features("u1", {"old": 1.0})
    real = store.get_user

    def read_then_someone_writes(user_id):
        answer = real(user_id)
        writer.set_user_features("u1", {"new": 1.0})
        time.sleep(0.05)  # let the invalidation arrive while this fetch is still in flight
        with cache._lock:  # noqa: SLF001 - make sure it has been applied before the fetch completes
            cache._drain_locked()  # noqa: SLF001
        return answer

    store.get_user = read_then_someone_writes
    try:
        assert cache.get_user("u1")[0] == {"old": 1.0}  # the racing read itself returns what it read
    finally:
        store.get_user = real
    assert cache.get_user("u1")[0] == {"new": 1.0}


def test_concurrent_readers_and_writers_converge(setup):
    """8 threads read while another client keeps rewriting users; afterwards every answer is current."""
    store, cache, writer = setup
    users = [f"u{k}" for k in range(10)]
    stop = threading.Event()
    errors: list = []

    def reader():
        while not stop.is_set():
            for u in users:
                try:
                    cache.get_user(u)
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for round_ in range(30):
        for u in users:
            writer.set_user_features(u, {"round": float(round_)})
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    truth = {u: store.get_user(u) for u in users}
    assert _eventually(lambda: {u: cache.get_user(u) for u in users} == truth, 2)


def test_ttl_bounds_entries(redis_url, key_prefix):
    store = RedisFeatureStore.from_url(redis_url, prefix=key_prefix)
    cache = UserCache(store, maxsize=100, ttl=0.2).start()
    try:
        assert cache.wait_live(5)
        cache.get_user("u1")
        before = _reads(store)
        cache.get_user("u1")
        assert _reads(store) == before
        time.sleep(0.3)
        cache.get_user("u1")
        assert _reads(store) == before + 1
    finally:
        cache.stop()
        store.close()


def test_lost_connection_bypasses_then_recovers(private_redis):
    store = RedisFeatureStore.from_url(private_redis.url, prefix="t:")
    writer = RedisFeatureStore.from_url(private_redis.url, prefix="t:")
    cache = UserCache(store, maxsize=100, ttl=60, retry_interval=0.1).start()
    try:
        assert cache.wait_live(5)
        writer.set_user_features("u1", {"a": 1.0})
        assert cache.get_user("u1")[0] == {"a": 1.0}
        killed = writer.client.client_kill_filter(_type="pubsub")
        assert killed == 1
        # no invalidation can arrive now; the write must still be seen (the cache is bypassed)
        writer.set_user_features("u1", {"b": 1.0})
        assert cache.get_user("u1")[0] == {"b": 1.0}
        assert _eventually(lambda: cache.live, 5), "tracking was not re-established"
        cache.get_user("u1")
        writer.set_user_features("u1", {"c": 1.0})
        assert _eventually(lambda: cache.get_user("u1")[0] == {"c": 1.0})
    finally:
        cache.stop()
        store.close()
        writer.close()


def test_silent_connection_is_detected(private_redis):
    """A server that stops answering (CLIENT PAUSE) turns the cache off within a few ping intervals."""
    store = RedisFeatureStore.from_url(private_redis.url, prefix="t:")
    admin = redis.Redis.from_url(private_redis.url)
    cache = UserCache(store, maxsize=100, ttl=60, ping_interval=0.1, retry_interval=0.1).start()
    try:
        assert cache.wait_live(5)
        admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        assert _eventually(lambda: not cache.live, 1.2), "a silent connection kept the cache on"
        assert _eventually(lambda: cache.live, 5), "tracking did not resume after the pause"
    finally:
        cache.stop()
        store.close()
        admin.close()


def test_flush_drops_everything(private_redis):
    store = RedisFeatureStore.from_url(private_redis.url, prefix="t:")
    writer = RedisFeatureStore.from_url(private_redis.url, prefix="t:")
    cache = UserCache(store, maxsize=100, ttl=60).start()
    try:
        assert cache.wait_live(5)
        writer.set_user_features("u1", {"a": 1.0})
        assert cache.get_user("u1")[0] == {"a": 1.0}
        writer.client.flushdb()
        assert _eventually(lambda: cache.get_user("u1") == (None, set(), set()))
    finally:
        cache.stop()
        store.close()
        writer.close()


def test_redis_down_then_up(tmp_path):
    """With Redis gone the cache errors like the store (nothing stale served); it resumes when Redis is back."""
    from recommender.errors import StoreUnavailableError

    server = LocalRedis(tmp_path).start()
    store = RedisFeatureStore.from_url(server.url, prefix="t:", socket_timeout=0.2, connect_timeout=0.2)
    cache = UserCache(store, maxsize=100, ttl=60, retry_interval=0.1).start()
    try:
        assert cache.wait_live(5)
        store.set_user_features("u1", {"a": 1.0})
        assert cache.get_user("u1")[0] == {"a": 1.0}
        server.stop()
        with pytest.raises(StoreUnavailableError):
            cache.get_user("u1")
        assert not cache.live
        server = LocalRedis(tmp_path, port=server.port).start()
        assert _eventually(lambda: cache.live, 10)
        assert cache.get_user("u1") == (None, set(), set())  # the new server is empty: nothing old was kept
    finally:
        cache.stop()
        store.close()
        server.stop()


def test_bad_arguments(redis_url, key_prefix):
    store = RedisFeatureStore.from_url(redis_url, prefix=key_prefix)
    with pytest.raises(ValueError):
        UserCache(store, maxsize=0)
    with pytest.raises(ValueError):
        UserCache(store, ttl=0)
    cache = UserCache(store)  # not started: bypassed, same validation as the store
    with pytest.raises(ValueError):
        cache.get_user("")
    assert not cache.live and cache.get_user("u1") == (None, set(), set()) and cache.bypasses == 1


def test_without_tracking_rights_the_cache_stays_off_and_answers(private_redis, caplog):
    """A server or ACL that refuses CLIENT (like Redis < 6 refusing TRACKING): bypass, warn once, stay correct."""
    import logging

    admin = redis.Redis.from_url(private_redis.url)
    admin.execute_command("ACL", "SETUSER", "notrack", "on", ">pw-notrack", "~*", "&*", "+@all", "-client")
    url = private_redis.url.replace("redis://", "redis://notrack:pw-notrack@")
    store = RedisFeatureStore.from_url(url, prefix="t:")
    cache = UserCache(store, maxsize=100, ttl=60, retry_interval=0.05)
    try:
        with caplog.at_level(logging.DEBUG, logger="recommender.usercache"):
            cache.start()
            time.sleep(0.5)  # ~10 attempts
        assert not cache.live
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "NOPERM" in warnings[0].getMessage()
        store.set_user_features("u1", {"a": 1.0})
        assert cache.get_user("u1") == ({"a": 1.0}, set(), set())
        store.set_user_features("u1", {"b": 1.0})
        assert cache.get_user("u1") == ({"b": 1.0}, set(), set()) and cache.bypasses == 2
    finally:
        cache.stop()
        store.close()
        admin.execute_command("ACL", "DELUSER", "notrack")
        admin.close()


def test_foreign_messages_and_failing_callbacks_fail_no_request(redis_url, key_prefix):
    """Anyone may PUBLISH on the invalidation channel, and a metrics callback may fail: lookups still
    answer correctly, and invalidations that arrive with such a message are not lost."""
    store = RedisFeatureStore.from_url(redis_url, prefix=key_prefix)
    writer = RedisFeatureStore.from_url(redis_url, prefix=key_prefix)

    def broken_metrics(result):
        raise OSError("metrics file not writable")

    cache = UserCache(store, maxsize=100, ttl=60, on_lookup=broken_metrics)
    cache._connect()  # noqa: SLF001 - no background thread: the request path reads every message
    try:
        writer.set_user_features("u1", {"a": 1.0})
        assert cache.get_user("u1") == ({"a": 1.0}, set(), set())
        assert cache.get_user("u1") == ({"a": 1.0}, set(), set()) and cache.hits == 1
        writer.client.publish("__redis__:invalidate", "not a key list")  # a foreign message,
        writer.client.hset(writer.keys.user_features("u1"), "a", "2")  # then a real invalidation
        assert _eventually(lambda: cache.get_user("u1") == ({"a": 2.0}, set(), set()), 2)
        assert not cache._inflight and not cache._dirty  # noqa: SLF001 - nothing leaked by the failing callback
    finally:
        cache.stop()
        store.close()
        writer.close()


def test_many_open_descriptors_do_not_break_the_health_check(private_redis):
    """select() fails on descriptors >= 1024; the watcher must still notice a silent Redis."""
    import resource
    import socket as socketlib

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("cannot open 1100 descriptors here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [socketlib.socket() for _ in range(1100)]
    store = RedisFeatureStore.from_url(private_redis.url, prefix="t:")
    admin = redis.Redis.from_url(private_redis.url)
    cache = UserCache(store, maxsize=100, ttl=60, ping_interval=0.1, retry_interval=0.1).start()
    try:
        assert cache.wait_live(5)
        assert cache._sock.fileno() >= 1024  # noqa: SLF001 - the case under test
        admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        assert _eventually(lambda: not cache.live, 1.2), "a silent connection kept the cache on"
        assert _eventually(lambda: cache.live, 5)
    finally:
        cache.stop()
        store.close()
        admin.close()
        for f in filler:
            f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
