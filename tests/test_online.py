"""Online evaluation pieces against a real Redis: the impression log and writer, attribution, exploration, variants."""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import pytest
from scipy.stats import norm

from recommender.localredis import free_port
from recommender.model import LFMRecommender
from recommender.online import (ImpressionWriter, Variant, assign_variant, exploration_seed, new_recommendation_id,
                                parse_variants)
from recommender.settings import VARIANT_SETTINGS
from recommender.store import RedisFeatureStore
from recommender.store.impressions import Impression, ImpressionLog, ctr_table, two_proportion_test
from recommender.synthetic import make_world
from tests.helpers import both_redis_url

redis_url = both_redis_url()  # the impression log on a single Redis and on a cluster


@pytest.fixture
def store(redis_url, key_prefix):
    s = RedisFeatureStore.from_url(redis_url, key_prefix)
    yield s
    s.close()


def impression(rid: str, user: str = "u1", items=("a", "b", "c"), explored=(), at: float | None = None):
    return Impression(rid, user, [(i, 1.0 - k / 10) for k, i in enumerate(items)], "personalized", "v1", "A",
                      list(explored), 50 if explored else 0, time.time() if at is None else at)


def test_attribution_counts_the_position_once_and_says_why_not(store):
    log = ImpressionLog(store, max_entries=100, ttl=60)
    one, two = new_recommendation_id(), new_recommendation_id()
    log.write([impression(one, explored=[2]), impression(two, user="u2", items=("c", "a"))])
    found = log.attribute([(one, "u1", "c"), (one, "u1", "c"), (one, "u1", "zzz"), (one, "u9", "a"),
                           (new_recommendation_id(), "u1", "a"), (two, "u2", "a")])
    assert [f.status for f in found] == ["attributed", "duplicate", "not_shown", "not_shown", "unknown_or_expired",
                                         "attributed"]
    assert (found[0].position, found[0].explored, found[5].position, found[5].explored) == (3, True, 2, False)
    counters = log.counters(time.time() - 3600, time.time() + 1)
    assert counters["imp:answers"] == 2 and counters["imp:slots"] == 5 and counters["click:total"] == 2
    assert counters["imp:explored"] == 1 and counters["click:explored"] == 1
    positions = ctr_table(counters, "pos")
    assert positions["3"] == {"impressions": 1, "clicks": 1, "ctr": 1.0}
    assert positions["1"] == {"impressions": 2, "clicks": 0, "ctr": 0.0}
    assert positions["2"] == {"impressions": 2, "clicks": 1, "ctr": 0.5}
    records = list(log.read())
    assert [r["recommendation_id"] for r in records] == [one, two] and records[0]["explored"] == [2]
    assert set(log.clicks()) == {(one, 3), (two, 2)}


def test_a_batch_is_one_stream_entry_and_older_one_answer_entries_still_read(store):
    log = ImpressionLog(store, max_entries=1000, ttl=60)
    batch = [impression(new_recommendation_id(), user=f"u{n}") for n in range(7)]
    log.write(batch)
    assert sum(store.client.xlen(k) for k in store.keys.impressions) == 1  # one XADD for the batch
    old = new_recommendation_id(time.time() + 1)
    stream = store.keys.impressions.key_of(old)
    (written,) = [entry for k in store.keys.impressions for entry, _ in store.client.xrange(k)]
    after = f"{int(written.split('-')[0]) + 1}-0"  # later than the batch (the same millisecond would tie)
    store.client.xadd(stream, {"r": f'["{old}","u0",[["a",1.0]],"popular","v0","A",[],0,{time.time() + 1},"user"]'},
                      id=after)
    records = list(log.read())
    assert [r["user_id"] for r in records] == [f"u{n}" for n in range(7)] + ["u0"]
    assert records[-1]["recommendation_id"] == old and records[-1]["items"] == [["a", 1.0]]
    assert [r["user_id"] for r in log.read(limit=3)] == ["u0", "u1", "u2"]


def test_attribution_records_are_a_few_expiring_hashes_and_pre_07_strings_still_attribute(store):
    log = ImpressionLog(store, max_entries=1000, ttl=120)
    now = time.time()
    batch = [impression(new_recommendation_id(now), user=f"u{n}") for n in range(40)]
    log.write(batch)
    buckets = {store.keys.impression_bucket(i.recommendation_id) for i in batch}
    assert 1 <= len(buckets) <= 16  # 8 shards x at most two 10 s windows, not one key per answer
    assert sum(store.client.hlen(b) for b in buckets) == 40
    for bucket in buckets:  # the window's end + IMPRESSION_TTL: between ttl and ttl + 10 s from now
        assert 120 - 2 <= store.client.ttl(bucket) <= 120 + 10 + 1
    assert not store.client.exists(store.keys.impression(batch[0].recommendation_id))
    # an answer written by a writer before 0.7: one string, its click claimed with SET NX
    old = new_recommendation_id(now)
    store.client.set(store.keys.impression(old), f'["u7",["x","y"],"personalized","A",[],{now}]', ex=120)
    found = log.attribute([(old, "u7", "y"), (old, "u7", "y"), (batch[3].recommendation_id, "u3", "b"),
                           (batch[3].recommendation_id, "u3", "b")])
    assert [(f.status, f.position) for f in found] == [("attributed", 2), ("duplicate", 2), ("attributed", 2),
                                                       ("duplicate", 2)]
    assert store.client.exists(store.keys.impression_click(old, 2))
    assert store.client.hexists(store.keys.impression_bucket(batch[3].recommendation_id),
                                f"{batch[3].recommendation_id}:click:2")


def test_the_writer_does_no_io_on_add_keeps_a_bounded_buffer_and_flushes_on_stop(store, redis_url, key_prefix):
    log = ImpressionLog(store, max_entries=100, ttl=60)
    writer = ImpressionWriter(log, interval=60, batch=1000, capacity=1000)  # no background thread yet
    for _ in range(5):
        writer.add(impression(new_recommendation_id()))
    assert sum(store.client.xlen(k) for k in store.keys.impressions) == 0  # buffered, nothing sent
    writer.start()
    writer.stop()  # a clean shutdown writes what is left
    assert len(list(log.read())) == 5 and writer.written == 5
    down = RedisFeatureStore.from_url(f"redis://127.0.0.1:{free_port()}/0", key_prefix, socket_timeout=0.2,
                                      connect_timeout=0.2, retries=0)
    stuck = ImpressionWriter(ImpressionLog(down), interval=60, batch=10, capacity=20)
    for _ in range(30):
        stuck.add(impression(new_recommendation_id()))
    assert stuck.flush() == 0 and stuck.dropped == 10  # bounded: the oldest beyond capacity are dropped
    assert stuck.flush() == 0 and stuck.dropped == 10 and len(stuck._buffer) == 20  # kept for the next attempt


def test_answers_are_serialised_by_the_adding_thread_and_read_back_as_written(store):
    """A flush must not hold the interpreter to serialise (the request-path tail): the writer's buffer holds
    bytes, what is read back is what was answered, and an answer that cannot be serialised is dropped and
    counted, never raised to the request."""
    from recommender.store.impressions import PreparedImpression

    log = ImpressionLog(store, max_entries=100, ttl=60)
    writer = ImpressionWriter(log, interval=60, batch=3, capacity=100)
    given = [impression(new_recommendation_id(), user=f"u{n}", items=("a", "b"), explored=[1] if n else [])
             for n in range(5)]
    for imp in given:
        writer.add(imp)
    assert all(isinstance(p, PreparedImpression) and isinstance(p.record, bytes) for p in writer._buffer)
    writer.add(Impression(new_recommendation_id(), "u9", [("a", {"not": "a score"})], "personalized", "v1", "A"))
    assert (writer.unserialisable, writer.dropped, len(writer._buffer)) == (1, 0, 5)
    assert writer.flush() == 5
    read = sorted(log.read(), key=lambda r: r["recommendation_id"])
    assert [(r["recommendation_id"], r["user_id"], r["items"], r["explored"], r["explore_pool"], r["time"])
            for r in read] == sorted((g.recommendation_id, g.user_id, [list(i) for i in g.items], g.explored,
                                      g.explore_pool, g.time) for g in given)
    assert [(r["strategy"], r["model_version"], r["variant"], r["context"]) for r in read] == \
        [("personalized", "v1", "A", "user")] * 5
    assert [f.status for f in log.attribute([(given[1].recommendation_id, "u1", "b")])] == ["attributed"]
    assert log.counters(time.time() - 3600, time.time() + 1)["imp:explored"] == 4
    mixed = [impression(new_recommendation_id(), user="m1"), log.prepare(impression(new_recommendation_id(),
                                                                                   user="m2"))]
    log.write(mixed)  # as given or prepared, in one batch
    assert {r["user_id"] for r in log.read()} >= {"m1", "m2"}


def test_an_impression_write_to_a_redis_that_is_down_is_the_store_error(key_prefix):
    from recommender.errors import StoreUnavailableError

    down = RedisFeatureStore.from_url(f"redis://127.0.0.1:{free_port()}/0", key_prefix, socket_timeout=0.2,
                                      connect_timeout=0.2, retries=0)
    with pytest.raises(StoreUnavailableError):
        ImpressionLog(down).write([impression(new_recommendation_id())])


def test_exploration_fills_slots_at_the_rate_with_eligible_items_reproducibly():
    world = make_world(300, 200, seed=3)
    model = LFMRecommender(no_components=8, random_state=0).fit(world.interactions, world.user_features,
                                                               world.item_features, epochs=2)
    user = model.uid_map.index[0]
    seen = set(world.interactions.loc[world.interactions["user_id"] == user, "item_id"])
    plain = model.rank(user, 10, exclude=seen)
    more = model.rank(user, 20, exclude=seen)
    explored, slots, in_model_top = 0, 0, 0
    for k in range(400):
        rid = new_recommendation_id()
        ranking = model.rank(user, 10, exclude=seen, explore=(0.25, exploration_seed(rid)))
        again = model.rank(user, 10, exclude=seen, explore=(0.25, exploration_seed(rid)))
        assert ranking.items == again.items and ranking.explored == again.explored  # reproducible from the id
        ids = [i for i, _ in ranking.items]
        assert len(set(ids)) == 10 and not set(ids) & seen
        drawn = {ids[slot] for slot in ranking.explored}
        kept = [ids[slot] for slot in range(10) if slot not in ranking.explored]
        # the other slots keep the model's order, skipping the drawn items
        assert kept == [i for i, _ in plain.items + more.items[10:] if i not in drawn][:len(kept)]
        # drawn from every eligible item, the model's own picks included (propensity independent of the model)
        assert ranking.explore_pool == model.n_items - len(seen) or not ranking.explored
        in_model_top += len(drawn & {i for i, _ in plain.items})
        explored += len(ranking.explored)
        slots += 10
    assert abs(explored / slots - 0.25) < 0.03, explored / slots  # 4,000 slots: 3 standard errors ~ 0.02
    assert in_model_top > 0  # ~1,000 draws from ~190 items: the model's 10 are drawn ~50 times


def test_variants_parse_assign_stably_and_split_by_share():
    variants = parse_variants('{"a": {"share": 0.7}, "b": {"share": 0.3, "settings": {"FOLD_IN": false}}}',
                              VARIANT_SETTINGS)
    assert variants == [Variant("a", 0.7, {}), Variant("b", 0.3, {"FOLD_IN": "false"})]
    users = [f"user-{k}" for k in range(20_000)]
    first = [assign_variant(u, variants).name for u in users]
    assert first == [assign_variant(u, variants).name for u in users]  # stable
    share = Counter(first)["b"] / len(users)
    assert abs(share - 0.3) < 0.015, share
    for bad, message in (('{"a": {"share": 1}}', "two or more"), ('{"a": {"share": 0.5}, "b": {"share": 0.4}}',
                                                                    "sum to 1"),
                         ('{"A b": {"share": 0.5}, "b": {"share": 0.5}}', "name"),
                         ('{"a": {"share": 0.5}, "b": {"share": 0.5, "settings": {"REDIS_URL": "x"}}}', "vary"),
                         ("not json", "JSON")):
        with pytest.raises(ValueError, match=message):
            parse_variants(bad, VARIANT_SETTINGS)


def test_two_proportion_test_matches_scipy():
    got = two_proportion_test(120, 1000, 90, 1000)
    pooled = 210 / 2000
    z = (0.12 - 0.09) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert got["z"] == pytest.approx(z) and got["p_value"] == pytest.approx(2 * norm.sf(abs(z)))
    assert two_proportion_test(0, 0, 1, 10)["p_value"] is None


def test_a_claim_on_an_answer_whose_hash_expired_after_the_read_leaves_no_key_without_ttl(store, monkeypatch):
    """The hash can expire between attribution's read and its HSETNX, which would recreate it without a TTL."""
    import orjson

    import recommender.store.impressions as module

    log = ImpressionLog(store, max_entries=100, ttl=60)
    rid = new_recommendation_id()
    log.write([impression(rid)])
    bucket = store.keys.impression_bucket(rid)
    real = orjson.loads

    def expire_then_parse(raw):  # runs after the read, before the claim
        store.client.delete(bucket)
        return real(raw)

    monkeypatch.setattr(module, "orjson", type("O", (), {"loads": staticmethod(expire_then_parse),
                                                          "dumps": staticmethod(orjson.dumps)}))
    found = log.attribute([(rid, "u1", "b")])
    assert found[0].status == "attributed"
    assert store.client.exists(bucket) and 0 < store.client.ttl(bucket) <= 60 + 10 + 1


def test_recommendation_ids_are_unique_across_forked_workers():
    """Ids draw their random part from the process's generator: a forked worker must not repeat its parent's
    draws (gunicorn forks every worker from one master)."""
    import multiprocessing
    import re

    def draw(queue):
        queue.put([new_recommendation_id()[12:] for _ in range(2000)])

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=draw, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    drawn = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(10)
    mine = [new_recommendation_id()[12:] for _ in range(2000)]
    everything = mine + drawn[0] + drawn[1]
    assert len(set(everything)) == len(everything) == 6000
    assert all(re.fullmatch(r"[0-9a-f]{20}", r) for r in everything)
