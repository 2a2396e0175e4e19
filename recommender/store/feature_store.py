"""RedisFeatureStore: user/item features, the item catalogue, seen items and the interaction log in Redis.

The keys are built in recommender.store.keys (its docstring has the table). Every entity is written in one
MULTI/EXEC on its own slot (a batch of interactions in one Lua script call per slot it touches, see
recommender.store.interactions), so a reader never sees a feature set that is half old and half new; every
input is validated before anything is sent (recommender.store.validation). Request-path reads are one round
trip. The same code runs on one Redis and on a Redis Cluster (recommender.store.connection); where the two
differ, the method says so. Any Redis failure surfaces as
:class:`~recommender.errors.StoreUnavailableError` (recommender.store.connection).
"""

from __future__ import annotations

import math
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from redis.exceptions import RedisError

from ..errors import StoreUnavailableError
from ..features import MAX_WEIGHT, check_id
from . import bulk
from .connection import (LuaScript, ThreadConnections, address_of, connect, connection_kwargs, disconnect,
                         is_cluster, run_atomic, store_errors)
from .interactions import InteractionLog, WriteResult
from .keys import EMPTY_MARKER, Keys
from .snapshot import Snapshot, read_snapshot
from .validation import check_features, parse_features

# The last step of erasing a user, on the slot of its log partition: delete from the stream every entry its
# log list still names, then the list, then the user from its part of the users set; atomic, so no entry
# appended to the list before this step survives it. KEYS: stream, log list, users part; ARGV: user id.
_ERASE_LOG_TAIL_LUA = """
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
local erased = 0
for i = 1, #ids, 1000 do
  erased = erased + redis.call('XDEL', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return erased
"""
ERASE_LOG_TAIL = LuaScript(_ERASE_LOG_TAIL_LUA)


class UserRecord(tuple):
    """What a request reads about one user, in one round trip.

    It is the tuple ``(features, seen, negative)``: features (None: never written; {}: set to nothing),
    the items the user interacted with, and those it gave a negative signal (weight <= 0). ``recent``
    maps the user's newest positive items to the time of the interaction (seconds; at most RECENT_ITEMS
    of them): what fold-in uses. It is carried beside the tuple, not in it, so that a record compares
    (and unpacks) as its three sets. ``memo`` is None, or, on a record served by the user cache, the dict
    that lives and dies with its cache entry: what the service keeps computed from this very record (its
    ranking; see RESULT_CACHE), dropped whenever the entry is (a write to the user, a flush, eviction).
    """

    def __new__(cls, features: dict[str, float] | None, seen: set[str], negative: set[str],
                recent: dict[str, float] | None = None, memo: dict | None = None) -> "UserRecord":
        record = super().__new__(cls, (features, seen, negative))
        record.recent = {} if recent is None else recent
        record.memo = memo
        return record

    features = property(lambda self: self[0], doc="feature name -> weight; None when never written")
    seen = property(lambda self: self[1], doc="items the user interacted with")
    negative = property(lambda self: self[2], doc="items the user gave weight <= 0")


def _scored(reply: list) -> dict[str, float]:
    """A ZRANGE WITHSCORES reply as {member: score}: RESP3 gives [member, score] pairs, RESP2 a flat list."""
    if reply and isinstance(reply[0], list):
        return {member: float(score) for member, score in reply}
    return {member: float(score) for member, score in zip(reply[::2], reply[1::2])}


#: the most seen item ids describe_user lists (the count is always exact)
SEEN_ITEMS_SHOWN = 100


class RedisFeatureStore:
    """Features, catalogue, seen items and interactions of one recommender, under one key prefix.

    Parameters
    ----------
    client : redis.Redis or recommender.store.connection.ClusterClient
        A client created with ``decode_responses=True`` (see :meth:`from_url`): one server, or a Redis
        Cluster. It is shared: jobs, the model pointer and the user cache use ``store.client`` with the
        keys of ``store.keys``.
    prefix : str
        Prepended to every key, e.g. ``"reco:"``.
    max_interactions : int
        Keep about this many of the newest interactions in the log (0: all). The log is
        ``keys.PARTITIONS`` streams (users spread over them by a hash of their id); writes trim each
        partition to its newest ``ceil(max_interactions / PARTITIONS)`` entries as they append, so Redis
        memory and training data stay bounded; training then sees a sliding window per partition.
        Seen sets are not trimmed: an item a user interacted with stays excluded.
    max_weight : float
        Bound of |weight| for interactions and features (MAX_WEIGHT); larger weights are refused.
    """

    def __init__(self, client: Any, prefix: str = "reco:", max_interactions: int = 0,
                 max_weight: float = MAX_WEIGHT):
        """Wrap a client; ValueError if the prefix is not a string or replies would be bytes."""
        if isinstance(max_interactions, bool) or not isinstance(max_interactions, int) or max_interactions < 0:
            raise ValueError(f"max_interactions must be a non-negative integer, got {max_interactions!r}")
        if not connection_kwargs(client).get("decode_responses"):
            # every read below expects str; bytes would silently turn ids into "b'u1'"
            raise ValueError("the Redis client must be created with decode_responses=True")
        self.keys = Keys(prefix)
        self.prefix = prefix
        if isinstance(max_weight, bool) or not isinstance(max_weight, (int, float)) or not max_weight > 0:
            raise ValueError(f"max_weight must be a positive number, got {max_weight!r}")
        self.max_interactions = max_interactions
        self.max_weight = float(max_weight)
        self.client = client
        self.cluster = is_cluster(client)
        self.address = address_of(client)
        self.interaction_log = InteractionLog(self)
        # per-thread connections: the request path's pre-packed reads and bulk loads' per-node writes
        self.connections = ThreadConnections(client)

    @classmethod
    def from_url(cls, url: str, prefix: str = "reco:", *, max_interactions: int = 0, max_weight: float = MAX_WEIGHT,
                 **connect_kwargs: Any) -> "RedisFeatureStore":
        """A store on its own connection pool; ``connect_kwargs`` as :func:`recommender.store.connection.connect`
        (socket_timeout, connect_timeout, retries, max_connections, health_check_interval, pool options).

        Raises
        ------
        ValueError
            A URL redis-py cannot parse, or negative limits.
        """
        return cls(connect(url, **connect_kwargs), prefix, max_interactions, max_weight)

    def ping(self) -> bool:
        """True if Redis answers PING (a cluster: if a node reports the cluster state ok, every slot served);
        never raises (for health checks)."""
        try:
            if self.cluster:  # any node answers PING, even while the cluster is down or still being created
                return self.client.execute_command("CLUSTER INFO").get("cluster_state") == "ok"
            return bool(self.client.ping())
        except (RedisError, OSError, AttributeError):
            return False

    def close(self) -> None:
        """Disconnect every pooled and per-thread connection (the store can still be used; it reconnects)."""
        disconnect(self.client)
        self.connections.close()

    # ------------------------------------------------------------------ writes

    @store_errors
    def set_user_features(self, user_id: str, features: Mapping[str, float]) -> None:
        """Replace a user's whole feature set atomically.

        An empty mapping is kept as "explicitly no features" (a marker field in the hash), which is not
        the same as a user whose features were never written: the model then scores a known user by its
        indicator alone instead of its training-time features.

        Raises
        ------
        ValueError
            Bad id, feature name or weight (nothing is written).
        StoreUnavailableError
            Redis did not answer.
        """
        uid = check_id(user_id, "user_id")
        feats = check_features(features, self.max_weight)
        # one MULTI on one Redis; on a cluster the hash's MULTI (its slot), then the users set's part (another
        # slot): the count may miss a user whose second step failed, the features are whole either way
        run_atomic(self.client, self._replace(self.keys.user_features(uid), feats) + [
            ("SADD" if feats else "SREM", self.keys.users_part(uid), uid)])

    @store_errors
    def set_item_features(self, item_id: str, features: Mapping[str, float], *,
                          add_to_catalogue: bool = True) -> None:
        """Replace an item's feature set atomically, add it to the catalogue and mark it changed.

        An empty mapping is kept as "explicitly no features" (see :meth:`set_user_features`): a known item
        is then scored by its indicator alone; the item still joins the catalogue and is marked changed
        so that every process re-reads it.

        Raises
        ------
        ValueError
            Bad id, feature name or weight (nothing is written).
        StoreUnavailableError
            Redis did not answer.
        """
        iid = check_id(item_id, "item_id")
        feats = check_features(features, self.max_weight)
        # one MULTI on one Redis; on a cluster the hash first (its slot), then catalogue and change mark (one
        # slot, one MULTI): watchers re-read the item only after its new features are in place
        catalogue = [("SADD", self.keys.items, iid)] if add_to_catalogue else []
        run_atomic(self.client, self._replace(self.keys.item_features(iid), feats) + catalogue + [
            ("ZADD", self.keys.items_changed, time.time(), iid)])

    @staticmethod
    def _replace(key: str, feats: dict[str, float]) -> list[tuple]:
        """Commands that replace the hash at ``key`` by ``feats`` (the empty marker for {})."""
        pairs = [value for item in (feats or {EMPTY_MARKER: ""}).items() for value in item]
        return [("DEL", key), ("HSET", key, *pairs)]

    def add_interactions(self, records: Iterable[Mapping], *, idempotency_key: str | None = None,
                         ttl: int = 86_400) -> int:
        """Append interactions to the log and to the users' seen sets in one atomic step, exactly once.

        Each record has ``user_id``, ``item_id``, optional ``weight`` (1.0) and ``timestamp`` (now,
        seconds). Returns the number of records in the batch. The write carries a once-only guard, so
        the client's own retry after a timeout that struck once Redis had written cannot append it twice;
        see :meth:`add_interactions_once` for retries across calls.

        Raises
        ------
        ValueError
            Any record or the idempotency key is invalid (InvalidIdempotencyKeyError); nothing is written.
        IdempotencyConflictError
            ``idempotency_key`` was used before for different records (nothing is written).
        StoreUnavailableError
            Redis did not answer.
        """
        return self.add_interactions_once(records, idempotency_key=idempotency_key, ttl=ttl).written

    @store_errors
    def add_interactions_once(self, records: Iterable[Mapping], *, idempotency_key: str | None = None,
                              ttl: int = 86_400) -> WriteResult:
        """:meth:`add_interactions`, also telling whether an earlier write with this key stood instead.

        With ``idempotency_key`` (1 to 255 printable ASCII characters, e.g. the client's request id),
        a repeat of the same records within ``ttl`` seconds writes nothing and returns the first write's
        count with ``replayed=True``; the same key with different records raises IdempotencyConflictError.
        Without one, a random key guards this call's own retries only.
        """
        return self.interaction_log.write(records, idempotency_key, ttl)

    # ------------------------------------------------------------------ lifecycle

    @store_errors
    def remove_item(self, item_id: str) -> bool:
        """Take an item out of the catalogue (its features stay, for training); True if it was in it.

        Marked changed, so every serving process stops recommending it within its watch interval. A later
        :meth:`set_item_features` brings it back.

        Raises
        ------
        ValueError
            Bad id.
        StoreUnavailableError
            Redis did not answer.
        """
        iid = check_id(item_id, "item_id")
        removed, _ = run_atomic(self.client, [("SREM", self.keys.items, iid),
                                              ("ZADD", self.keys.items_changed, time.time(), iid)])
        return bool(removed)

    @store_errors
    def erase_user(self, user_id: str, chunk: int = 10_000) -> dict[str, int]:
        """Erase everything kept under a user's id: features, seen and negative sets, and its interactions
        in the log (through the user's log list: the cost is the user's own interactions, never a scan
        of the whole log). Returns what was erased: ``features`` (0/1), ``seen``, ``negative`` and
        ``interactions`` counts.

        The log list is read and its entries deleted in chunks; the last step deletes what the list
        still names, the list and the user's entry in the users set in one script on the slot of the
        user's log partition, so every interaction logged before that step is erased. The user's own
        keys (features, seen, negative, recent, batch) go in one MULTI on the user's slot (on one Redis,
        the same MULTI as the rest of the last step). An interaction written while the erasure runs may
        leave seen items behind (erase again). The user cache of every process drops the user through
        Redis's invalidations (the keys are deleted).

        Raises
        ------
        ValueError
            Bad id.
        StoreUnavailableError
            Redis did not answer.
        """
        uid = check_id(user_id, "user_id")
        keys = self.keys
        log_key, stream = keys.user_log(uid), keys.log_partition(uid)
        erased = 0
        while True:  # the bulk of a long log in chunks (a script over all of it would block Redis)
            ids = self.client.lrange(log_key, 0, chunk - 1)
            if len(ids) < chunk:
                break
            erased += int(self.client.xdel(stream, *ids))
            self.client.ltrim(log_key, len(ids), -1)
        user_side = [("EXISTS", keys.user_features(uid)), ("SCARD", keys.user_seen(uid)),
                     ("SCARD", keys.user_negative(uid)), ("DEL", *keys.user_keys(uid))]
        if self.cluster:
            erased += int(ERASE_LOG_TAIL(self.client, [stream, log_key, keys.users_part(uid)], [uid]))
            features, seen, negative, _ = run_atomic(self.client, user_side)
        else:
            with self.client.pipeline(transaction=True) as pipe:  # everything left, in one MULTI
                # EVAL, not EVALSHA: a NOSCRIPT inside a MULTI would fail this step alone after the others ran
                pipe.eval(ERASE_LOG_TAIL.source, 3, stream, log_key, keys.users_part(uid), uid)
                for command in user_side:
                    pipe.execute_command(*command)
                tail, features, seen, negative, _ = pipe.execute()
            erased += int(tail)
        return {"features": int(features), "seen": int(seen), "negative": int(negative), "interactions": erased}

    @store_errors
    def describe_user(self, user_id: str) -> dict:
        """What the store holds about a user: ``features`` (None if never written), ``seen`` and ``negative``
        counts, ``interactions`` (entries of the user in the log), and ``seen_items``: the seen item ids,
        sorted (all of them up to SEEN_ITEMS_SHOWN; past that, that many drawn at random).

        Raises
        ------
        ValueError
            Bad id.
        StoreUnavailableError
            Redis did not answer.
        """
        uid = check_id(user_id, "user_id")
        keys = self.keys
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.user_features(uid))
            pipe.scard(keys.user_seen(uid))
            pipe.scard(keys.user_negative(uid))
            pipe.llen(keys.user_log(uid))
            pipe.srandmember(keys.user_seen(uid), SEEN_ITEMS_SHOWN)
            raw, seen, negative, logged, seen_items = pipe.execute()
        return {"features": parse_features(raw, keys.user_features(uid)) if raw else None, "seen": int(seen),
                "negative": int(negative), "interactions": int(logged), "seen_items": sorted(seen_items)}

    @store_errors
    def describe_item(self, item_id: str) -> dict:
        """What the store holds about an item: ``features`` (None if never written) and ``in_catalogue``.

        Raises
        ------
        ValueError
            Bad id.
        StoreUnavailableError
            Redis did not answer.
        """
        iid = check_id(item_id, "item_id")
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.item_features(iid))
            pipe.sismember(self.keys.items, iid)
            raw, member = pipe.execute()
        return {"features": parse_features(raw, self.keys.item_features(iid)) if raw else None,
                "in_catalogue": bool(member)}

    # ------------------------------------------------------------------ request-path reads

    @store_errors
    def get_user(self, user_id: str) -> UserRecord:
        """A user's features, seen items and negative items, in one round trip.

        ``features`` is None when none were ever written (or they were erased), {} when they were set
        to nothing. This is the one read on every request, so it skips redis-py's pool and pipeline
        (measured ~110 -> ~45 us of client CPU): HGETALL, two SMEMBERS and a ZRANGE (the user's keys share
        a slot) go out as one pre-packed write on a connection owned by the calling thread, to the node
        that holds the user's slot on a cluster (following MOVED/ASK), with the pool's timeouts and retry
        policy.

        Raises
        ------
        ValueError
            Bad id.
        StoreUnavailableError
            Redis did not answer.
        """
        uid = check_id(user_id, "user_id")
        keys = self.keys
        features_key = keys.user_features(uid)
        raw, seen, negative, recent = self.connections.call((
            ("HGETALL", features_key), ("SMEMBERS", keys.user_seen(uid)), ("SMEMBERS", keys.user_negative(uid)),
            ("ZRANGE", keys.user_recent(uid), "0", "-1", "WITHSCORES")), features_key)
        if isinstance(raw, list):  # RESP2 (protocol=2): a flat field, value list
            raw = dict(zip(raw[::2], raw[1::2]))
        return UserRecord(parse_features(raw, features_key) if raw else None, set(seen), set(negative),
                          _scored(recent))

    @store_errors
    def get_item_features(self, item_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Features of many items in one round trip; items whose features were never written (or were
        erased) are absent, items set to nothing map to {}.

        Raises
        ------
        ValueError
            Bad id.
        StoreUnavailableError
            Redis did not answer.
        """
        ids = list(dict.fromkeys(check_id(i, "item_id") for i in item_ids))
        if not ids:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for iid in ids:
                pipe.hgetall(self.keys.item_features(iid))
            replies = pipe.execute()
        out: dict[str, dict[str, float]] = {}
        for iid, raw in zip(ids, replies):
            if raw:
                out[iid] = parse_features(raw, self.keys.item_features(iid))
        return out

    @store_errors
    def in_catalogue(self, item_ids: Sequence[str]) -> dict[str, bool]:
        """Whether each item is in the catalogue (one SMISMEMBER).

        Raises
        ------
        StoreUnavailableError
            Redis did not answer.
        """
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        return dict(zip(ids, map(bool, self.client.smismember(self.keys.items, ids))))

    @store_errors
    def catalogue(self) -> set[str]:
        """Every item id in the catalogue.

        Read with SSCAN in chunks rather than one SMEMBERS, so that a million-item catalogue does not
        block Redis (and every other client's requests) for the whole reply.

        Raises
        ------
        StoreUnavailableError
            Redis did not answer.
        """
        return set(self.client.sscan_iter(self.keys.items, count=10_000))

    @store_errors
    def catalogue_size(self) -> int:
        """Number of items in the catalogue.

        Raises
        ------
        StoreUnavailableError
            Redis did not answer.
        """
        return int(self.client.scard(self.keys.items))

    @store_errors
    def item_changes_since(self, since: float) -> list[tuple[str, float]]:
        """(item_id, time) of items whose features were written after ``since`` (exclusive), oldest first.

        Raises
        ------
        ValueError
            ``since`` is not a number or is NaN.
        StoreUnavailableError
            Redis did not answer.
        """
        if isinstance(since, bool) or not isinstance(since, (int, float, np.integer, np.floating)) \
                or math.isnan(since):
            raise ValueError(f"since must be a number of seconds, got {since!r}")
        low = "(" + repr(float(since))  # "(" = exclusive; repr(-inf) is "-inf", which Redis accepts
        pairs = self.client.zrangebyscore(self.keys.items_changed, low, "+inf", withscores=True)
        return [(str(member), float(score)) for member, score in pairs]

    @store_errors
    def counts(self) -> dict:
        """Users with features, catalogue size and interaction count, in one round trip.

        Users are counted with SCARD of the parts of ``reco:users`` (kept by every feature write) rather
        than a SCAN, and interactions with XLEN of the log's partitions: 2 x PARTITIONS + 1 commands in one
        pipeline (one round trip per node), independent of the data's size.

        Raises
        ------
        StoreUnavailableError
            Redis did not answer.
        """
        keys = self.keys
        with self.client.pipeline(transaction=False) as pipe:
            pipe.scard(keys.items)
            for part in keys.users:
                pipe.scard(part)
            for part in keys.interactions:
                pipe.xlen(part)
            replies = pipe.execute()
        n = len(keys.users)
        return {"users_with_features": sum(map(int, replies[1:1 + n])), "items": int(replies[0]),
                "interactions": sum(map(int, replies[1 + n:]))}

    @store_errors
    def is_empty(self) -> bool:
        """True if the catalogue and the interaction log are both empty (nothing loaded yet).

        Raises
        ------
        StoreUnavailableError
            Redis did not answer.
        """
        with self.client.pipeline(transaction=False) as pipe:
            pipe.scard(self.keys.items)
            for part in self.keys.interactions:
                pipe.xlen(part)
            replies = pipe.execute()
        return not any(int(r) for r in replies)

    # ------------------------------------------------------------------ bulk loads and the training snapshot

    @store_errors
    def bulk_load_user_features(self, frame: pd.DataFrame, *, batch: int = 5000, progress: bool = False) -> int:
        """Load long-form user features (user_id, feature[, weight]); returns the number of rows.

        Each user's whole feature set is replaced, as by :meth:`set_user_features`; rows repeating a
        (user, feature) pair are summed, as ``LFMRecommender.fit`` does. Each batch of ``batch`` users
        is one pipeline (per node on a cluster) of one script call per user (atomic per user: delete and
        refill its hash) and the users set's parts.

        Raises
        ------
        ValueError
            Missing columns, bad ids, names or weights anywhere in the frame (nothing is written).
        StoreUnavailableError
            Redis did not answer (batches already sent stay written).
        """
        return bulk.load_features(self, frame, "user_id", batch, progress)

    @store_errors
    def bulk_load_item_features(self, frame: pd.DataFrame, *, batch: int = 5000, progress: bool = False) -> int:
        """Load long-form item features (item_id, feature[, weight]) and add the items to the catalogue.

        Same semantics as :meth:`bulk_load_user_features`; items are also marked changed.

        Raises
        ------
        ValueError
            Missing columns, bad ids, names or weights anywhere in the frame (nothing is written).
        StoreUnavailableError
            Redis did not answer (batches already sent stay written).
        """
        return bulk.load_features(self, frame, "item_id", batch, progress)

    @store_errors
    def bulk_load_interactions(self, frame: pd.DataFrame, *, batch: int = 5000, progress: bool = False) -> int:
        """Append interactions (user_id, item_id[, weight, timestamp]) to the log and seen sets.

        Weight defaults to 1.0 and timestamp to now. Each batch of ``batch`` rows is written exactly as
        :meth:`add_interactions` writes it (one guarded script call on one Redis, one per slot on a
        cluster, pipelined per node), guarded the same way: the client's retry of a batch that Redis had
        already written appends nothing. Returns the number of rows.

        Raises
        ------
        ValueError
            Missing columns, bad ids, weights or timestamps anywhere in the frame (nothing is written).
        StoreUnavailableError
            Redis did not answer (batches already sent stay written).
        """
        return bulk.load_interactions(self, frame, batch, progress)

    @store_errors
    def snapshot(self, after_id: str | None = None) -> Snapshot:
        """The interaction log (after the cursor ``after_id``, exclusive) and every feature hash, as frames
        for training.

        See :func:`recommender.store.snapshot.read_snapshot` (chunked reads; needs Redis >= 6.2).

        Raises
        ------
        ValueError
            ``after_id`` is not a cursor returned as ``Snapshot.last_id``.
        StoreUnavailableError
            Redis did not answer.
        """
        return read_snapshot(self, after_id)


__all__ = ["RedisFeatureStore", "Snapshot", "WriteResult"]
