"""RedisFeatureStore: user/item features, the item catalogue, seen items and the interaction log in Redis.

The keys are built in recommender.store.keys (its docstring has the table). Every entity is written in one
MULTI/EXEC (a batch of interactions in one Lua script call, see recommender.store.interactions), so a
reader never sees a feature set that is half old and half new; every input is validated before anything
is sent (recommender.store.validation). Request-path reads are one round trip. Any Redis failure
surfaces as :class:`~recommender.errors.StoreUnavailableError` (recommender.store.connection).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import redis
from redis.exceptions import RedisError

from ..errors import StoreUnavailableError
from ..features import MAX_WEIGHT, check_id
from . import bulk
from .connection import ThreadConnections, address_of, connect, pack, store_errors
from .interactions import InteractionLog, WriteResult
from .keys import EMPTY_MARKER, Keys
from .snapshot import Snapshot, read_snapshot
from .validation import check_features, parse_features


class UserRecord(tuple):
    """What a request reads about one user, in one round trip.

    It is the tuple ``(features, seen, negative)``: features (None: never written; {}: set to nothing),
    the items the user interacted with, and those it gave a negative signal (weight <= 0). ``recent``
    maps the user's newest positive items to the time of the interaction (seconds; at most RECENT_ITEMS
    of them): what fold-in uses. It is carried beside the tuple, not in it, so that a record compares
    (and unpacks) as its three sets.
    """

    def __new__(cls, features: dict[str, float] | None, seen: set[str], negative: set[str],
                recent: dict[str, float] | None = None) -> "UserRecord":
        record = super().__new__(cls, (features, seen, negative))
        record.recent = {} if recent is None else recent
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
    client : redis.Redis
        A client created with ``decode_responses=True`` (see :meth:`from_url`). It is shared: jobs, the
        model pointer and the user cache use ``store.client`` with the keys of ``store.keys``.
    prefix : str
        Prepended to every key, e.g. ``"reco:"``.
    max_interactions : int
        Keep about this many of the newest interactions in the log (0: all). Writes trim the stream as
        they append (approximately: at least this many stay, plus up to one stream node of ~100
        entries), so Redis memory and training data stay bounded; training then sees a sliding window.
        Seen sets are not trimmed: an item a user interacted with stays excluded.
    max_weight : float
        Bound of |weight| for interactions and features (MAX_WEIGHT); larger weights are refused.
    """

    def __init__(self, client: redis.Redis, prefix: str = "reco:", max_interactions: int = 0,
                 max_weight: float = MAX_WEIGHT):
        """Wrap a client; ValueError if the prefix is not a string or replies would be bytes."""
        if isinstance(max_interactions, bool) or not isinstance(max_interactions, int) or max_interactions < 0:
            raise ValueError(f"max_interactions must be a non-negative integer, got {max_interactions!r}")
        if not client.connection_pool.connection_kwargs.get("decode_responses"):
            # every read below expects str; bytes would silently turn ids into "b'u1'"
            raise ValueError("the Redis client must be created with decode_responses=True")
        self.keys = Keys(prefix)
        self.prefix = prefix
        if isinstance(max_weight, bool) or not isinstance(max_weight, (int, float)) or not max_weight > 0:
            raise ValueError(f"max_weight must be a positive number, got {max_weight!r}")
        self.max_interactions = max_interactions
        self.max_weight = float(max_weight)
        self.client = client
        self.address = address_of(client)
        self.interaction_log = InteractionLog(self)
        self._threads = ThreadConnections(client)  # the request path's per-thread connections

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
        """True if Redis answers PING; never raises (for health checks)."""
        try:
            return bool(self.client.ping())
        except (RedisError, OSError):
            return False

    def close(self) -> None:
        """Disconnect every pooled and per-thread connection (the store can still be used; it reconnects)."""
        self.client.connection_pool.disconnect()
        self._threads.close()

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
        with self._replace_features(self.keys.user_features(uid), feats) as pipe:
            if feats:
                pipe.sadd(self.keys.users, uid)
            else:
                pipe.srem(self.keys.users, uid)

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
        with self._replace_features(self.keys.item_features(iid), feats) as pipe:
            if add_to_catalogue:
                pipe.sadd(self.keys.items, iid)
            pipe.zadd(self.keys.items_changed, {iid: time.time()})

    @contextmanager
    def _replace_features(self, key: str, feats: dict[str, float]):
        """A MULTI/EXEC that replaces the hash at ``key`` by ``feats`` (the empty marker for {}); the caller
        adds its own commands."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=feats or {EMPTY_MARKER: ""})
            yield pipe
            pipe.execute()

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
        with self.client.pipeline(transaction=True) as pipe:
            pipe.srem(self.keys.items, iid)
            pipe.zadd(self.keys.items_changed, {iid: time.time()})
            removed, _ = pipe.execute()
        return bool(removed)

    @store_errors
    def erase_user(self, user_id: str, chunk: int = 10_000) -> dict[str, int]:
        """Erase everything kept under a user's id: features, seen and negative sets, and its interactions
        in the log (through the user's log list: the cost is the user's own interactions, never a scan
        of the whole log). Returns what was erased: ``features`` (0/1), ``seen``, ``negative`` and
        ``interactions`` counts.

        Interactions appended while the erasure runs are erased too, up to the final step; one racing
        that step may survive it (erase again). The user cache of every process drops the user through
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
        log_key = keys.user_log(uid)
        erased = 0
        while True:
            ids = self.client.lrange(log_key, 0, chunk - 1)
            if not ids:
                break
            erased += int(self.client.xdel(keys.interactions, *ids))
            self.client.ltrim(log_key, len(ids), -1)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.exists(keys.user_features(uid))
            pipe.scard(keys.user_seen(uid))
            pipe.scard(keys.user_negative(uid))
            pipe.delete(*keys.user_keys(uid))
            pipe.srem(keys.users, uid)
            features, seen, negative, _, _ = pipe.execute()
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
        (measured ~110 -> ~45 us of client CPU): HGETALL and two SMEMBERS go out as one pre-packed write
        on a connection owned by the calling thread, with the pool's timeouts and retry policy.

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
        raw, seen, negative, recent = self._threads.call(pack(
            ("HGETALL", features_key), ("SMEMBERS", keys.user_seen(uid)), ("SMEMBERS", keys.user_negative(uid)),
            ("ZRANGE", keys.user_recent(uid), "0", "-1", "WITHSCORES")), 4)
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

        Users are counted with SCARD of ``reco:users`` (kept by every feature write) rather than a SCAN,
        so this is O(1) and safe to call from a health or metrics endpoint.

        Raises
        ------
        StoreUnavailableError
            Redis did not answer.
        """
        with self.client.pipeline(transaction=False) as pipe:
            pipe.scard(self.keys.users)
            pipe.scard(self.keys.items)
            pipe.xlen(self.keys.interactions)
            users, items, interactions = pipe.execute()
        return {"users_with_features": int(users), "items": int(items), "interactions": int(interactions)}

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
            pipe.xlen(self.keys.interactions)
            items, interactions = pipe.execute()
        return int(items) == 0 and int(interactions) == 0

    # ------------------------------------------------------------------ bulk loads and the training snapshot

    @store_errors
    def bulk_load_user_features(self, frame: pd.DataFrame, *, batch: int = 5000, progress: bool = False) -> int:
        """Load long-form user features (user_id, feature[, weight]); returns the number of rows.

        Each user's whole feature set is replaced, as by :meth:`set_user_features`; rows repeating a
        (user, feature) pair are summed, as ``LFMRecommender.fit`` does. Each batch of ``batch`` users
        is one MULTI/EXEC: atomic per user, and Redis is busy for a few ms per batch.

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

        Weight defaults to 1.0 and timestamp to now. Each batch of ``batch`` rows is one atomic Lua
        script call that writes exactly what :meth:`add_interactions` writes, guarded the same way: the
        client's retry of a batch that Redis had already written appends nothing. Returns the number of rows.

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
        """The interaction log (after ``after_id``, exclusive) and every feature hash, as frames for training.

        See :func:`recommender.store.snapshot.read_snapshot` (chunked reads; needs Redis >= 6.2).

        Raises
        ------
        ValueError
            ``after_id`` is not a stream id like ``1700000000000-0``.
        StoreUnavailableError
            Redis did not answer.
        """
        return read_snapshot(self, after_id)


__all__ = ["RedisFeatureStore", "Snapshot", "WriteResult"]
