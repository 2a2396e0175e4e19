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
from ..features import check_id
from . import bulk
from .connection import ThreadConnections, address_of, connect, pack, store_errors
from .interactions import InteractionLog, WriteResult
from .keys import Keys
from .snapshot import Snapshot, read_snapshot
from .validation import check_features, parse_features


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
    """

    def __init__(self, client: redis.Redis, prefix: str = "reco:", max_interactions: int = 0):
        """Wrap a client; ValueError if the prefix is not a string or replies would be bytes."""
        if isinstance(max_interactions, bool) or not isinstance(max_interactions, int) or max_interactions < 0:
            raise ValueError(f"max_interactions must be a non-negative integer, got {max_interactions!r}")
        if not client.connection_pool.connection_kwargs.get("decode_responses"):
            # every read below expects str; bytes would silently turn ids into "b'u1'"
            raise ValueError("the Redis client must be created with decode_responses=True")
        self.keys = Keys(prefix)
        self.prefix = prefix
        self.max_interactions = max_interactions
        self.client = client
        self.address = address_of(client)
        self.interaction_log = InteractionLog(self)
        self._threads = ThreadConnections(client)  # the request path's per-thread connections

    @classmethod
    def from_url(cls, url: str, prefix: str = "reco:", *, max_interactions: int = 0,
                 **connect_kwargs: Any) -> "RedisFeatureStore":
        """A store on its own connection pool; ``connect_kwargs`` as :func:`recommender.store.connection.connect`
        (socket_timeout, connect_timeout, retries, max_connections, health_check_interval, pool options).

        Raises
        ------
        ValueError
            A URL redis-py cannot parse, or negative limits.
        """
        return cls(connect(url, **connect_kwargs), prefix, max_interactions)

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
        """Replace a user's whole feature set atomically; an empty mapping deletes it.

        Raises
        ------
        ValueError
            Bad id, feature name or weight (nothing is written).
        StoreUnavailableError
            Redis did not answer.
        """
        uid = check_id(user_id, "user_id")
        feats = check_features(features)
        with self._replace_features(self.keys.user_features(uid), feats) as pipe:
            if feats:
                pipe.sadd(self.keys.users, uid)
            else:
                pipe.srem(self.keys.users, uid)

    @store_errors
    def set_item_features(self, item_id: str, features: Mapping[str, float], *,
                          add_to_catalogue: bool = True) -> None:
        """Replace an item's feature set atomically, add it to the catalogue and mark it changed.

        An empty mapping deletes the features; the item still joins the catalogue (a known item can be
        recommended without features) and is still marked changed so that caches drop its old row.

        Raises
        ------
        ValueError
            Bad id, feature name or weight (nothing is written).
        StoreUnavailableError
            Redis did not answer.
        """
        iid = check_id(item_id, "item_id")
        feats = check_features(features)
        with self._replace_features(self.keys.item_features(iid), feats) as pipe:
            if add_to_catalogue:
                pipe.sadd(self.keys.items, iid)
            pipe.zadd(self.keys.items_changed, {iid: time.time()})

    @contextmanager
    def _replace_features(self, key: str, feats: dict[str, float]):
        """A MULTI/EXEC that replaces the hash at ``key`` by ``feats``; the caller adds its own commands."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if feats:
                pipe.hset(key, mapping=feats)
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

    # ------------------------------------------------------------------ request-path reads

    @store_errors
    def get_user(self, user_id: str) -> tuple[dict[str, float], set[str]]:
        """A user's features and seen items, in one round trip ({} and set() when unknown).

        This is the one read on every request, so it skips redis-py's pool and pipeline (measured
        ~110 -> ~45 us of client CPU): HGETALL and SMEMBERS go out as one pre-packed write on a
        connection owned by the calling thread, with the pool's timeouts and retry policy.

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
        raw, seen = self._threads.call(pack(("HGETALL", features_key), ("SMEMBERS", keys.user_seen(uid))), 2)
        if isinstance(raw, list):  # RESP2 (protocol=2): a flat field, value list
            raw = dict(zip(raw[::2], raw[1::2]))
        return parse_features(raw, features_key), set(seen)

    @store_errors
    def get_item_features(self, item_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Features of many items in one round trip; items without a feature hash are absent.

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
