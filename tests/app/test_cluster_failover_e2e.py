"""A Redis Cluster master dies under load, through real gunicorn: every answer is 200 (or 503) in bounded time,
none is wrong (each equals the model's, read with the user's stored record, or from the model alone when
marked degraded), keyed interaction writes retried through the failover land exactly once, and the service
comes back by itself once the replica has taken over."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
import requests

from recommender.localredis import LocalRedisCluster
from recommender.model import LFMRecommender
from recommender.store.keys import slot_of

from tests.helpers import (TOKEN, log_entries, publish_first_model, seed_store, service_settings, small_world,
                           start_gunicorn, wait_for)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
N = 5


@pytest.fixture
def cluster(tmp_path):
    nodes = LocalRedisCluster(tmp_path / "cluster", replicas=1, node_timeout=1000).start()
    yield nodes
    nodes.stop()


def _master_of(cluster: LocalRedisCluster, slot: int) -> int:
    """Port of the master serving ``slot``."""
    import redis

    with redis.Redis(port=cluster.primaries()[0].port, decode_responses=True) as admin:
        for start, end, master, *_ in admin.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
    raise AssertionError(slot)


def test_a_master_failover_under_load_gives_no_wrong_answer_and_heals(cluster, tmp_path):
    world = small_world()
    prefix = "reco:"
    settings = service_settings(cluster.url, prefix, tmp_path / "models", watch_interval=0.3)
    store = seed_store(cluster.url, prefix, world)
    version = publish_first_model(store, settings)
    model = LFMRecommender.load(f"{settings.model_dir}/{version}")
    users = sorted(set(world.interactions["user_id"]), key=lambda u: int(u[1:]))[:30]
    candidates = sorted(set(world.interactions["item_id"]) & set(store.catalogue()))[:40]
    expected = {}
    for user in users:  # what the model answers with the stored record, and from the model alone
        feats, seen, negative = store.get_user(user)
        expected[user] = {
            False: model.recommend(user, N, user_features=feats, exclude=seen, item_ids=candidates),
            True: model.recommend(user, N, item_ids=candidates),
        }
    victim_port = _master_of(cluster, slot_of(store.keys.user_features(users[0])))
    on_victim = {u for u in users if _master_of(cluster, slot_of(store.keys.user_features(u))) == victim_port}
    assert 0 < len(on_victim) < len(users)
    service = start_gunicorn(settings, tmp_path, workers=2)
    stop = threading.Event()
    results: list = []
    writes: list = []  # (batch key, users, acknowledged at)
    lock = threading.Lock()
    query = f"n={N}&items=" + ",".join(candidates)

    def reader(k: int) -> None:
        session = requests.Session()
        i = k
        while not stop.is_set():
            user = users[i % len(users)]
            i += 4
            started = time.monotonic()
            try:
                r = session.get(f"{service.base}/recommend/{user}?{query}", timeout=10)
                body = r.json()
                entry = (r.status_code, user, body, started, time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 - a refused or reset connection is a failure too
                entry = (0, user, repr(exc), started, time.monotonic() - started)
            with lock:
                results.append(entry)

    def writer() -> None:
        """Keyed batches of two users (one on the dying master), each retried with its key until a 200."""
        session = requests.Session()
        k = 0
        while not stop.is_set():
            batch_users = [sorted(on_victim)[k % len(on_victim)], sorted(set(users) - on_victim)[k % 5]]
            key = f"failover-{uuid.uuid4().hex[:8]}"
            body = [{"user_id": u, "item_id": f"w-{key}"} for u in batch_users]
            while True:
                try:
                    r = session.post(f"{service.base}/interactions", json=body, timeout=10,
                                     headers=dict(AUTH, **{"Idempotency-Key": key}))
                    if r.status_code == 200:
                        break
                    assert r.status_code == 503, r.text
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            with lock:
                writes.append((key, batch_users, time.monotonic()))
            k += 1
            time.sleep(0.05)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        victim = next(n for n in cluster.nodes if n.port == victim_port)
        killed_at = time.monotonic()
        victim.process.kill()  # SIGKILL: its replica is promoted after ~1-3 s
        victim.process.wait()

        def noticed() -> bool:
            with lock:
                return any(r[3] > killed_at and (r[0] != 200 or r[2]["degraded"]) for r in results)

        def all_fresh_again() -> bool:
            with lock:
                recent = [r for r in results if r[3] > time.monotonic() - 1.0]
            return len(recent) > 20 and all(r[0] == 200 and r[2]["degraded"] is False for r in recent)

        wait_for(noticed, timeout=10, interval=0.05)
        wait_for(all_fresh_again, timeout=30, interval=0.5)
        healed_at = time.monotonic()
        ready = requests.get(service.base + "/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        service.stop()

    bad_status = [r for r in results if r[0] not in (200, 503)]
    assert not bad_status, bad_status[:3]
    assert max(r[4] for r in results) < 3.0, "an answer took too long during the failover"
    wrong = []
    for status, user, body, _, _ in results:
        if status != 200:
            continue
        want = expected[user][body["degraded"]]
        got = [(i["item_id"], i["score"]) for i in body["items"]]
        if [i for i, _ in got] != [i for i, _ in want] or any(abs(a - b) > 1e-4 for (_, a), (_, b) in zip(got, want)):
            wrong.append((user, body["degraded"], got, want))
    assert not wrong, wrong[:2]
    during = [r for r in results if killed_at <= r[3] <= healed_at]
    degraded = Counter(r[2]["degraded"] for r in during if r[0] == 200)
    print(f"\n{len(results)} answers, {Counter(r[0] for r in results)}; during the failover ({healed_at - killed_at:.1f} s) "
          f"degraded {degraded[True]}, fresh {degraded[False]}; {len(writes)} keyed batches written; slowest "
          f"{max(r[4] for r in results):.2f} s")
    assert degraded[True] > 0, "the failover went unnoticed: the test did not test it"
    assert len([r for r in results if r[3] > healed_at and r[0] == 200]) > 20
    # every acknowledged keyed batch is in the log exactly once for the user on a surviving master; for the
    # user on the dead master at most once (a write its master acknowledged just before dying may not have
    # reached the replica: Redis replication is asynchronous), and never twice
    logged = Counter((e["user_id"], e["item_id"]) for e in log_entries(store))
    assert writes, "no write went through"
    for key, (on_dead, on_live), _ in writes:
        assert logged[(on_live, f"w-{key}")] == 1, key
        assert logged[(on_dead, f"w-{key}")] <= 1, key
    assert max(logged.values()) == 1 or all(item.startswith("i") for (_, item), c in logged.items() if c > 1)
