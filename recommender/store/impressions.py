"""What was shown and what was clicked: the impression log, attribution, and windowed counters.

Every answer of the service is an impression, identified by its ``recommendation_id``. The impression log
keeps, per answer: the user, the items with their positions and scores, the strategy, model version and
A/B variant, the slots filled at random (exploration) with the size of the pool they were drawn from, the
context and the time. It is written in batches off the request path (recommender.online.ImpressionWriter),
as one pipeline per batch:

- an entry in one partition of the ``impressions`` stream (recommender.store.keys.Partitioned: a batch goes
  to the partition of its first answer's id, so writers spread over a cluster's masters; each partition
  capped at about ``max_entries`` answers in all, ``MAXLEN ~``): one entry per batch, its field ``b`` a JSON
  list of the batch's answers, each a list of RECORD_FIELDS: the records for offline evaluation
  (``reco-online-eval``). One XADD per batch, not per answer: the writer's flush holds the interpreter
  (and the request threads wait) for about half as long;
- a field ``<id>`` of the hash ``imp:{<shard>}:<window>`` (keys.impression_bucket: answers by the 10 s
  window of their id's time and one of 8 shards; the hash expires ``ttl`` seconds after its window ends):
  what attribution looks up (user, item ids, strategy, variant, explored slots, time; JSON, ~0.3 KB for 10
  items). One HSET per hash a batch touches, not a SET per answer;
- counters in hour buckets ``stats:{hour}:{shard}``, summed over the batch before they are sent:
  impressions in total, per position, strategy, variant, and explored slots.

Attribution (:meth:`ImpressionLog.attribute`) links an interaction that carries a ``recommendation_id`` to
the position the item was shown at. A (recommendation, position) pair counts once (``HSETNX`` of the field
``<id>:click:<position>`` in the answer's hash; ``SET NX`` of ``imp:{id}:click:<position>`` for an answer
written before 0.7 as a string ``imp:{id}``, which attribution still reads), in the hour bucket of the impression, so
click-through rates compare clicks with the impressions they came from. Attributed clicks also go into the
capped, partitioned ``attributions`` stream.
"""
from __future__ import annotations

import heapq
import math
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple, Sequence

import orjson

from .connection import store_errors
from .keys import IMPRESSION_WINDOW, impression_window

SHARDS = 8  # counter keys per hour: no single key takes every impression
STATS_TTL = 90 * 24 * 3600  # seconds an hour's counters are kept
#: the stream record's fields, in the order of its JSON list (``r``)
RECORD_FIELDS = ("recommendation_id", "user_id", "items", "strategy", "model_version", "variant", "explored",
                 "explore_pool", "time", "context")
COUNTER_FIELDS = ("total", "pos", "strategy", "variant", "explored")


@dataclass
class Impression:
    """One answer as shown: ``items`` (item_id, score) best first; ``explored`` the random slots (0-based).

    ``context`` says what the answer was for: "user" (GET /recommend without ``items`` or ``filter``: the
    whole catalogue was eligible), "restricted" (a candidate list or filters narrowed it) or "session"
    (POST /recommend). Offline replay uses the "user" answers only (recommender.online_eval).
    """

    recommendation_id: str
    user_id: str
    items: list[tuple[str, float]]
    strategy: str
    model_version: str
    variant: str
    explored: list[int] = field(default_factory=list)
    explore_pool: int = 0
    time: float = field(default_factory=time.time)
    context: str = "user"


class PreparedImpression(NamedTuple):
    """An :class:`Impression` serialised by :meth:`ImpressionLog.prepare`: the thread that gave the answer
    does this (~10 µs), so that a writer's flush only joins bytes and sends them. Serialising 100 answers in
    the flush held the interpreter for ~2 ms at a time, during which no request thread of the process ran:
    at saturation /recommend's p99 was 7.5-7.9 ms without the writer and 10-36 ms with it."""

    recommendation_id: str
    record: bytes  # the stream record: a JSON list of RECORD_FIELDS
    bucket: str  # the attribution hash's key
    attribution: bytes  # the attribution hash's field value (JSON)
    counted: tuple  # (hour, strategy, variant, items, explored slots): what the counters add up


@dataclass(frozen=True)
class Attribution:
    """What attributing one interaction found: ``status`` is "attributed" (with the 1-based ``position``,
    whether that slot was ``explored``, and the impression's strategy and variant), "duplicate" (that slot
    was attributed before), "not_shown" (the item was not in the answer, or the answer was another
    user's) or "unknown_or_expired"."""

    status: str
    position: int | None = None
    explored: bool = False
    strategy: str | None = None
    variant: str | None = None


def _hour(t: float) -> int:
    return int(t // 3600)


def _shard(recommendation_id: str) -> int:
    return zlib.crc32(recommendation_id.encode()) % SHARDS


class ImpressionLog:
    """The impression log and its counters in one store.

    Parameters
    ----------
    store : RedisFeatureStore
    max_entries : int
        About this many newest impressions (and attributions) stay in their streams (0: all).
    ttl : int
        Seconds an impression can still be attributed (its hash's TTL).
    """

    def __init__(self, store, max_entries: int = 1_000_000, ttl: int = 3600):
        self.store = store
        self.address = store.address
        self.max_entries = max_entries
        self.ttl = ttl

    def _bucket_expiry(self, recommendation_id: str) -> int:
        """When the attribution hash of an answer expires (seconds since the epoch): ``ttl`` after its window."""
        return (impression_window(recommendation_id) + 1) * IMPRESSION_WINDOW + self.ttl

    def _cap(self, partitioned) -> int | None:
        """MAXLEN of each partition of a capped stream (None: uncapped)."""
        return max(1, self.max_entries // len(partitioned)) if self.max_entries else None

    def prepare(self, imp: Impression) -> PreparedImpression:
        """What :meth:`write` sends of one impression, serialised now (no I/O)."""
        rid = imp.recommendation_id
        record = orjson.dumps([rid, imp.user_id, [[i, round(s, 6)] for i, s in imp.items], imp.strategy,
                               imp.model_version, imp.variant, imp.explored, imp.explore_pool, imp.time, imp.context])
        # what attribution needs, no more (see IMPRESSION_TTL in the README)
        attribution = orjson.dumps([imp.user_id, [i for i, _ in imp.items], imp.strategy, imp.variant, imp.explored,
                                    imp.time])
        return PreparedImpression(rid, record, self.store.keys.impression_bucket(rid), attribution,
                                  (_hour(imp.time), imp.strategy, imp.variant, len(imp.items), len(imp.explored)))

    @store_errors
    def write(self, impressions: Sequence[Impression | PreparedImpression]) -> None:
        """Append impressions, as given or already prepared (:meth:`prepare`), in one pipeline.

        Per batch, not per answer: one stream entry; one HSET per attribution hash touched (answers by
        10 s window and shard: keys.impression_bucket), with its EXPIREAT; the counters summed first, one
        HINCRBY per counter field and hour. A writer's flush holds the interpreter, and so the request
        threads, for as short as it can (a SET per answer cost ~2x the whole flush). A batch's counts go to
        one shard (that of its first answer); shards only spread the writes, readers sum them.
        """
        if not impressions:
            return
        keys = self.store.keys
        prepared = [imp if isinstance(imp, PreparedImpression) else self.prepare(imp) for imp in impressions]
        first = prepared[0].recommendation_id
        stream, shard = keys.impressions.key_of(first), _shard(first)
        # the cap counts entries, one per batch: about max_entries answers per partition set in all
        cap = max(1, self.max_entries // (len(keys.impressions) * len(prepared))) if self.max_entries else None
        buckets: dict[str, dict[str, bytes]] = defaultdict(dict)
        expire_at: dict[str, int] = {}
        answers: Counter = Counter()  # (hour, strategy, variant, items, explored slots) -> answers
        for imp in prepared:
            buckets[imp.bucket][imp.recommendation_id] = imp.attribution
            if imp.bucket not in expire_at:
                expire_at[imp.bucket] = self._bucket_expiry(imp.recommendation_id)
            answers[imp.counted] += 1
        totals: dict[str, Counter] = defaultdict(Counter)
        for (hour, strategy, variant, n, explored), count in answers.items():
            counts = totals[keys.stats(hour, shard)]
            counts["imp:total"] += count
            counts["imp:answers"] += count
            counts[f"imp:strategy:{strategy}"] += n * count
            counts[f"imp:variant:{variant}"] += n * count
            for position in range(1, n + 1):
                counts[f"imp:pos:{position}"] += count
            if explored:
                counts["imp:explored"] += explored * count
            counts["imp:slots"] += n * count
        with self.store.client.pipeline(transaction=False) as pipe:
            pipe.xadd(stream, {"b": b"[" + b",".join(imp.record for imp in prepared) + b"]"}, maxlen=cap,
                      approximate=True)
            for bucket, mapping in buckets.items():
                pipe.hset(bucket, mapping=mapping)
                pipe.expireat(bucket, expire_at[bucket])
            for key, counts in totals.items():
                for name, value in counts.items():
                    pipe.hincrby(key, name, value)
                pipe.expire(key, STATS_TTL)
            pipe.execute()

    @store_errors
    def attribute(self, records: Sequence[tuple[str, str, str]], at: float | None = None) -> list[Attribution]:
        """Attribute (recommendation_id, user_id, item_id) interactions to what was shown (see the module)."""
        if not records:
            return []
        keys = self.store.keys
        ids = list(dict.fromkeys(r for r, _, _ in records))
        with self.store.client.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hget(keys.impression_bucket(rid), rid)
            found = dict(zip(ids, pipe.execute()))
        legacy = set()  # answers written before 0.7, one string each, still attributable during an upgrade
        missing = [rid for rid in ids if found[rid] is None]
        if missing:
            with self.store.client.pipeline(transaction=False) as pipe:
                for rid in missing:
                    pipe.get(keys.impression(rid))
                for rid, raw in zip(missing, pipe.execute()):
                    if raw is not None:
                        found[rid] = raw
                        legacy.add(rid)
        outcome: list[Attribution] = []
        claims = []  # (record index, rid, position, impression fields)
        for n, (rid, user, item) in enumerate(records):
            raw = found.get(rid)
            if raw is None:
                outcome.append(Attribution("unknown_or_expired"))
                continue
            shown_user, items, strategy, variant, explored, shown_at = orjson.loads(raw)
            positions = [p for p, i in enumerate(items, start=1) if i == item]
            if shown_user != user or not positions:
                outcome.append(Attribution("not_shown"))
                continue
            position = positions[0]
            was_explored = (position - 1) in explored
            outcome.append(Attribution("attributed", position, was_explored, strategy, variant))
            claims.append((n, rid, position, float(shown_at), strategy, variant, was_explored))
        if claims:
            at = time.time() if at is None else at
            with self.store.client.pipeline(transaction=False) as pipe:
                slots = []  # the reply of each claim (an EXPIREAT follows a hash claim)
                for _, rid, position, _, _, _, _ in claims:
                    slots.append(len(pipe))
                    if rid in legacy:
                        pipe.set(keys.impression_click(rid, position), at, nx=True, ex=self.ttl)
                    else:  # the claim lives in the answer's hash: same slot, same expiry
                        bucket = keys.impression_bucket(rid)
                        pipe.hsetnx(bucket, f"{rid}:click:{position}", at)
                        # again: had the hash expired since the read, HSETNX made a new one without a TTL
                        pipe.expireat(bucket, self._bucket_expiry(rid))
                replies = pipe.execute()
                first = [replies[i] for i in slots]
            with self.store.client.pipeline(transaction=False) as pipe:
                for (n, rid, position, shown_at, strategy, variant, was_explored), new in zip(claims, first):
                    if not new:  # this slot of this answer was attributed before: count it once
                        outcome[n] = Attribution("duplicate", position, was_explored, strategy, variant)
                        continue
                    counters = keys.stats(_hour(shown_at), _shard(rid))
                    pipe.hincrby(counters, "click:total", 1)
                    pipe.hincrby(counters, f"click:pos:{position}", 1)
                    pipe.hincrby(counters, f"click:strategy:{strategy}", 1)
                    pipe.hincrby(counters, f"click:variant:{variant}", 1)
                    if was_explored:
                        pipe.hincrby(counters, "click:explored", 1)
                    pipe.expire(counters, STATS_TTL)
                    pipe.xadd(keys.attributions.key_of(rid),
                              {"recommendation_id": rid, "user_id": records[n][1], "item_id": records[n][2],
                               "position": position, "explored": int(was_explored), "time": at},
                              maxlen=self._cap(keys.attributions), approximate=True)
                pipe.execute()
        return outcome

    @store_errors
    def counters(self, since: float, until: float) -> dict[str, int]:
        """Summed counters of the impressions shown in [since, until) (whole hours: the buckets touched)."""
        hours = range(_hour(since), _hour(until - 1e-9) + 1)
        if len(hours) > 24 * 400:
            raise ValueError("the window may span at most 400 days")
        keys = self.store.keys
        with self.store.client.pipeline(transaction=False) as pipe:
            for hour in hours:
                for shard in range(SHARDS):
                    pipe.hgetall(keys.stats(hour, shard))
            replies = pipe.execute()
        total: dict[str, int] = {}
        for reply in replies:
            for name, value in reply.items():
                total[name] = total.get(name, 0) + int(value)
        return total

    def _entries(self, stream: str, start: str, end: str) -> Iterator[tuple[tuple[int, int], dict]]:
        """One partition's entries in [start, end], oldest first, as ((ms, seq), fields), 10,000 per read."""
        while True:
            entries = self.store.client.xrange(stream, start, end, count=10_000)
            if not entries:
                return
            for entry_id, fields in entries:
                ms, _, seq = entry_id.partition("-")
                yield (int(ms), int(seq)), fields
            start = "(" + entries[-1][0]

    def read(self, since: float = 0.0, until: float = math.inf, limit: int = 1_000_000) -> Iterable[dict]:
        """Impression records written in [since, until), oldest first over every partition (offline
        evaluation); at most ``limit``. The window applies to the time of writing (within a flush of the
        time shown)."""
        start = f"{int(since * 1000)}-0" if since > 0 else "-"
        end = f"{int(until * 1000)}-0" if math.isfinite(until) else "+"
        parts = [self._entries(stream, start, end) for stream in self.store.keys.impressions]
        n = 0
        for _, fields in heapq.merge(*parts, key=lambda e: e[0]):
            batch = fields.get("b")  # one entry per written batch; "r": one answer per entry (before 0.7)
            for record in orjson.loads(batch) if batch is not None else [orjson.loads(fields["r"])]:
                if n >= limit:
                    return
                n += 1
                yield dict(zip(RECORD_FIELDS, record))

    @store_errors
    def clicks(self, since: float = 0.0) -> dict[tuple[str, int], float]:
        """(recommendation_id, position) -> time of every attributed click in the attributions stream."""
        start = f"{int(since * 1000)}-0" if since > 0 else "-"
        out = {}
        for stream in self.store.keys.attributions:
            for _, fields in self._entries(stream, start, "+"):
                out[(fields["recommendation_id"], int(fields["position"]))] = float(fields["time"])
        return out

def ctr_table(counters: dict[str, int], kind: str) -> dict[str, dict]:
    """{value: {"impressions", "clicks", "ctr"}} for one kind of counter ("pos", "strategy", "variant")."""
    out: dict[str, dict] = {}
    for name, value in counters.items():
        side, _, rest = name.partition(":")
        got, _, key = rest.partition(":")
        if got != kind or side not in ("imp", "click"):
            continue
        row = out.setdefault(key, {"impressions": 0, "clicks": 0})
        row["impressions" if side == "imp" else "clicks"] += value
    for row in out.values():
        row["ctr"] = row["clicks"] / row["impressions"] if row["impressions"] else None
    return out


def two_proportion_test(clicks_a: int, shown_a: int, clicks_b: int, shown_b: int) -> dict:
    """Two-sided two-proportion z-test of CTR a vs b (pooled variance): {"z", "p_value", "difference"}."""
    if not shown_a or not shown_b:
        return {"z": None, "p_value": None, "difference": None}
    pa, pb = clicks_a / shown_a, clicks_b / shown_b
    pooled = (clicks_a + clicks_b) / (shown_a + shown_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / shown_a + 1 / shown_b))
    if se == 0:
        return {"z": None, "p_value": None, "difference": pa - pb}
    z = (pa - pb) / se
    return {"z": z, "p_value": math.erfc(abs(z) / math.sqrt(2)), "difference": pa - pb}
