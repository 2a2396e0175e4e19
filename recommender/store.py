"""RedisFeatureStore: user/item features, the item catalogue, seen items and the interaction log in Redis.

Keys (``prefix`` defaults to ``reco:``; ``{id}`` may contain ``:``):

=============================== ========== ====================================================
key                             type       holds
=============================== ========== ====================================================
``reco:user:{id}:features``     hash       feature name -> weight (float, written with repr)
``reco:item:{id}:features``     hash       feature name -> weight
``reco:users``                  set        users that have a feature hash (for O(1) counts)
``reco:items``                  set        the item catalogue: every item that may be recommended
``reco:items:changed``          zset       item id -> time its features were last written
``reco:user:{id}:seen``         set        items the user interacted with (for exclusion)
``reco:interactions``           stream     user_id, item_id, weight, timestamp: the training log
=============================== ========== ====================================================

Every entity is written in one MULTI/EXEC (a bulk batch of interactions in one Lua script call), so a
reader never sees a feature set that is half old and half new; every input is validated before
anything is sent. Request-path reads are one round trip. Connection, timeout and protocol errors
surface as :class:`~recommender.errors.StoreUnavailableError`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd
import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .errors import StoreUnavailableError
from .features import check_feature_name, check_id, check_weight

log = logging.getLogger(__name__)

FEATURES_SUFFIX = ":features"
XRANGE_CHUNK = 10_000  # stream entries per XRANGE call in snapshot()
SCAN_CHUNK = 1_000  # keys per SCAN call and per pipelined HGETALL batch in snapshot()
_GLOB_SPECIAL = "\\*?[]"

# Every interaction write (add_interactions, and each batch of a bulk load) is one atomic script call:
# XADD + SADD per row, guarded by a once-only key. KEYS[1] is the stream, KEYS[2] the guard, KEYS[i + 2]
# the seen set of row i (declared, not built in Lua); ARGV[1] is the guard's TTL in seconds, ARGV[2] a
# fingerprint of the request, ARGV[3] the stream's length limit (0: none; else approximate, "MAXLEN ~",
# which trims whole stream nodes and costs next to nothing), then user, item, weight, ts per row. If the
# guard exists the batch was written before (a retry): nothing is written and the guard's
# "<count>:<fingerprint>" comes back.
# One command per batch is also ~3x faster than a MULTI of two commands per row (redis-py's per-command
# cost dominates a bulk load).
_APPEND_INTERACTIONS_LUA = """
local prev = redis.call('GET', KEYS[2])
if prev then return {0, prev} end
local n = (#ARGV - 3) / 4
local limit = tonumber(ARGV[3])
for i = 1, n do
  local b = 3 + (i - 1) * 4
  if limit > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', limit, '*', 'user_id', ARGV[b + 1], 'item_id', ARGV[b + 2],
               'weight', ARGV[b + 3], 'timestamp', ARGV[b + 4])
  else
    redis.call('XADD', KEYS[1], '*', 'user_id', ARGV[b + 1], 'item_id', ARGV[b + 2],
               'weight', ARGV[b + 3], 'timestamp', ARGV[b + 4])
  end
  redis.call('SADD', KEYS[i + 2], ARGV[b + 2])
end
redis.call('SET', KEYS[2], n .. ':' .. ARGV[2], 'EX', ARGV[1])
return {1, n}
"""
# A call's own guard only has to outlive the client's retries of that call (well under a second).
CALL_GUARD_TTL = 60
MAX_IDEMPOTENCY_KEY = 255


class IdempotencyConflictError(ValueError):
    """An idempotency key was used before for a different batch of interactions."""


class InvalidIdempotencyKeyError(ValueError):
    """An idempotency key is not 1 to 255 printable ASCII characters."""


@dataclass(frozen=True)
class WriteResult:
    """What an interaction write did: rows in the batch, and whether an earlier write of it stood instead."""

    written: int
    replayed: bool


F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Snapshot:
    """Everything needed to train: the interaction log and both long-form feature tables.

    ``last_id`` is the stream id of the last interaction read (pass it back as ``after_id`` to read only
    newer ones), or ``after_id`` itself when nothing newer was there, or None for an empty log.
    """

    interactions: pd.DataFrame  # user_id, item_id, weight, timestamp
    user_features: pd.DataFrame  # user_id, feature, weight
    item_features: pd.DataFrame  # item_id, feature, weight
    last_id: str | None


def _unavailable_as_domain_error(method: F) -> F:
    """Turn redis ConnectionError/TimeoutError/InvalidResponse into StoreUnavailableError (one type to catch)."""

    @functools.wraps(method)
    def wrapper(self: "RedisFeatureStore", *args: Any, **kwargs: Any) -> Any:
        """Call the method; re-raise unavailability as the domain error."""
        try:
            return method(self, *args, **kwargs)
        # InvalidResponse too: a URL that points at something that is not Redis (a proxy, another
        # service) leaves the store just as unusable as a closed port
        except (RedisConnectionError, RedisTimeoutError, InvalidResponse) as exc:
            raise StoreUnavailableError(
                f"feature store unavailable: Redis at {self.address} did not answer {method.__name__}() "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    return wrapper  # type: ignore[return-value]


class RedisFeatureStore:
    """Features, catalogue, seen items and interactions of one recommender, under one key prefix.

    Parameters
    ----------
    client : redis.Redis
        A client created with ``decode_responses=True`` (see :meth:`from_url`). It is shared: other
        components use ``store.client`` and ``store.key(...)`` for their own keys.
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
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string, got {prefix!r}")
        if isinstance(max_interactions, bool) or not isinstance(max_interactions, int) or max_interactions < 0:
            raise ValueError(f"max_interactions must be a non-negative integer, got {max_interactions!r}")
        self.max_interactions = max_interactions
        kwargs = client.connection_pool.connection_kwargs
        if not kwargs.get("decode_responses"):
            # every read below expects str; bytes would silently turn ids into "b'u1'"
            raise ValueError("the Redis client must be created with decode_responses=True")
        self.client = client
        self.prefix = prefix
        self.address = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self._users_key = self.key("users")
        self._items_key = self.key("items")
        self._changed_key = self.key("items", "changed")
        self._stream_key = self.key("interactions")
        self._append_script = client.register_script(_APPEND_INTERACTIONS_LUA)  # EVALSHA, loads on NOSCRIPT
        self._retry = kwargs.get("retry") or Retry(ExponentialBackoff(cap=0.2, base=0.01), 2)
        self._local = threading.local()  # per-thread connection of get_user
        self._thread_conns: weakref.WeakSet = weakref.WeakSet()  # ... all of them, for close()

    @classmethod
    def from_url(cls, url: str, prefix: str = "reco:", *, socket_timeout: float = 0.5,
                 connect_timeout: float = 0.5, retries: int = 2, max_connections: int = 50,
                 health_check_interval: float = 30, max_interactions: int = 0,
                 **pool_kwargs: Any) -> "RedisFeatureStore":
        """A store on one connection pool with short timeouts and a bounded exponential-backoff retry.

        Parameters
        ----------
        url : str
            ``redis://[:password@]host:port/db``, ``rediss://...`` or ``unix://...``.
        prefix : str
            Key prefix.
        socket_timeout, connect_timeout : float
            Seconds before a command or a connection attempt fails (then it is retried).
        retries : int
            Retries after the first failure, with exponential backoff from 10 ms capped at 200 ms.
        max_connections : int
            Size limit of the pool (one per concurrent request thread is enough).
        health_check_interval : float
            Seconds a pooled connection may idle before it is PINGed ahead of its next command (0 = never).
            The PING has its own retries, so against a server that accepts connections but does not
            answer, a call fails only after about ``(retries + 1) ** 2 * socket_timeout`` (~4.8 s with the
            defaults) instead of ``(retries + 1) * socket_timeout`` with 0; a refused connection fails
            within milliseconds either way.
        max_interactions : int
            Interaction log length limit (0: none); see the class.
        **pool_kwargs
            Passed to :meth:`redis.ConnectionPool.from_url`, e.g. ``protocol=2`` for a server older
            than Redis 6 (redis-py 8 speaks RESP3 by default), or ``parser_class``.

        Raises
        ------
        ValueError
            A URL redis-py cannot parse, or negative limits.
        """
        if retries < 0 or max_connections < 1 or socket_timeout <= 0 or connect_timeout <= 0 \
                or health_check_interval < 0:
            raise ValueError("retries must be >= 0, max_connections >= 1, timeouts > 0 and "
                             "health_check_interval >= 0")
        pool = redis.ConnectionPool.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            # retry_on_timeout is deprecated in redis-py >= 6; listing both errors here is equivalent
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), retries),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=health_check_interval,
            max_connections=max_connections,
            **pool_kwargs,
        )
        return cls(redis.Redis(connection_pool=pool), prefix, max_interactions)

    def key(self, *parts: str) -> str:
        """The full key of ``parts``: prefix + ":".join(parts), e.g. reco:user:u1:features."""
        return self.prefix + ":".join(parts)

    def _user_key(self, user_id: str) -> str:
        """Feature hash of a (validated) user id."""
        return f"{self.prefix}user:{user_id}{FEATURES_SUFFIX}"

    def _item_key(self, item_id: str) -> str:
        """Feature hash of a (validated) item id."""
        return f"{self.prefix}item:{item_id}{FEATURES_SUFFIX}"

    def _seen_key(self, user_id: str) -> str:
        """Seen-items set of a (validated) user id."""
        return f"{self.prefix}user:{user_id}:seen"

    def ping(self) -> bool:
        """True if Redis answers PING; never raises (for health checks)."""
        try:
            return bool(self.client.ping())
        except (RedisError, OSError):
            return False

    def close(self) -> None:
        """Disconnect every pooled and per-thread connection (the store can still be used; it reconnects)."""
        self.client.connection_pool.disconnect()
        for conn in list(self._thread_conns):
            conn.disconnect()

    # ------------------------------------------------------------------ writes

    @_unavailable_as_domain_error
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
        feats = _check_features(features)
        key = self._user_key(uid)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if feats:
                pipe.hset(key, mapping=feats)
                pipe.sadd(self._users_key, uid)
            else:
                pipe.srem(self._users_key, uid)
            pipe.execute()

    @_unavailable_as_domain_error
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
        feats = _check_features(features)
        key = self._item_key(iid)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if feats:
                pipe.hset(key, mapping=feats)
            if add_to_catalogue:
                pipe.sadd(self._items_key, iid)
            pipe.zadd(self._changed_key, {iid: time.time()})
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

    @_unavailable_as_domain_error
    def add_interactions_once(self, records: Iterable[Mapping], *, idempotency_key: str | None = None,
                              ttl: int = 86_400) -> WriteResult:
        """:meth:`add_interactions`, also telling whether an earlier write with this key stood instead.

        With ``idempotency_key`` (1 to 255 printable ASCII characters, e.g. the client's request id),
        a repeat of the same records within ``ttl`` seconds writes nothing and returns the first write's
        count with ``replayed=True``; the same key with different records raises IdempotencyConflictError.
        Without one, a random key guards this call's own retries only.
        """
        if idempotency_key is None:
            guard, ttl = self._call_guard(), CALL_GUARD_TTL
        else:
            guard = self.key("once", "key", _check_idempotency_key(idempotency_key))
            if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
                raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        given = [_check_interaction(record, n) for n, record in enumerate(records)]
        if not given:
            return WriteResult(0, False)
        now = time.time()
        rows = [(user, item, weight, now if ts is None else ts) for user, item, weight, ts in given]
        fingerprint = _fingerprint(given)
        fresh, value = self._append(rows, guard, ttl, fingerprint)
        if fresh:
            return WriteResult(int(value), False)
        count, _, earlier = str(value).partition(":")
        if earlier != fingerprint:
            raise IdempotencyConflictError(
                f"idempotency key {idempotency_key!r} was already used for a different batch of interactions")
        return WriteResult(int(count), True)

    def _call_guard(self) -> str:
        """A fresh once-only key: it guards one script call against redis-py's own retries of it."""
        return self.key("once", "call", uuid.uuid4().hex)

    def _append(self, rows: Sequence[tuple], guard: str, ttl: int, fingerprint: str) -> tuple[int, Any]:
        """One guarded call of the append script (see _APPEND_INTERACTIONS_LUA): (1, count) if it wrote,
        (0, "<count>:<fingerprint>") if ``guard`` was there already."""
        keys = [self._stream_key, guard] + [self._seen_key(user) for user, _, _, _ in rows]
        return self._append_script(keys=keys, args=[ttl, fingerprint, self.max_interactions]
                                   + [value for row in rows for value in row])

    # ------------------------------------------------------------------ request-path reads

    @_unavailable_as_domain_error
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
        key = self._user_key(uid)
        features_key, seen_key = key.encode(), self._seen_key(uid).encode()
        packed = [b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%s\r\n*2\r\n$8\r\nSMEMBERS\r\n$%d\r\n%s\r\n"
                  % (len(features_key), features_key, len(seen_key), seen_key)]
        conn = self._thread_connection()
        raw, seen = self._retry.call_with_retry(lambda: _two_replies(conn, packed), _drop_connection(conn))
        if isinstance(raw, list):  # RESP2 (protocol=2): a flat field, value list
            raw = dict(zip(raw[::2], raw[1::2]))
        return _parse_features(raw, key), set(seen)

    def _thread_connection(self) -> redis.connection.AbstractConnection:
        """This thread's own connection for get_user (created on first use, reconnects by itself)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():  # new thread, or a forked child of the creator
            pool = self.client.connection_pool
            conn = self._local.conn = pool.connection_class(**pool.connection_kwargs)
            self._thread_conns.add(conn)
        return conn

    @_unavailable_as_domain_error
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
                pipe.hgetall(self._item_key(iid))
            replies = pipe.execute()
        out: dict[str, dict[str, float]] = {}
        for iid, raw in zip(ids, replies):
            if raw:
                out[iid] = _parse_features(raw, self._item_key(iid))
        return out

    @_unavailable_as_domain_error
    def catalogue(self) -> set[str]:
        """Every item id in the catalogue.

        Read with SSCAN in chunks rather than one SMEMBERS, so that a million-item catalogue does not
        block Redis (and every other client's requests) for the whole reply.

        Raises
        ------
        StoreUnavailableError
            Redis did not answer.
        """
        return set(self.client.sscan_iter(self._items_key, count=10_000))

    @_unavailable_as_domain_error
    def catalogue_size(self) -> int:
        """Number of items in the catalogue.

        Raises
        ------
        StoreUnavailableError
            Redis did not answer.
        """
        return int(self.client.scard(self._items_key))

    @_unavailable_as_domain_error
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
        pairs = self.client.zrangebyscore(self._changed_key, low, "+inf", withscores=True)
        return [(str(member), float(score)) for member, score in pairs]

    @_unavailable_as_domain_error
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
            pipe.scard(self._users_key)
            pipe.scard(self._items_key)
            pipe.xlen(self._stream_key)
            users, items, interactions = pipe.execute()
        return {"users_with_features": int(users), "items": int(items), "interactions": int(interactions)}

    @_unavailable_as_domain_error
    def is_empty(self) -> bool:
        """True if the catalogue and the interaction log are both empty (nothing loaded yet).

        Raises
        ------
        StoreUnavailableError
            Redis did not answer.
        """
        with self.client.pipeline(transaction=False) as pipe:
            pipe.scard(self._items_key)
            pipe.xlen(self._stream_key)
            items, interactions = pipe.execute()
        return int(items) == 0 and int(interactions) == 0

    # ------------------------------------------------------------------ bulk loads

    @_unavailable_as_domain_error
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
        return self._bulk_load_features(frame, "user_id", batch, progress)

    @_unavailable_as_domain_error
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
        return self._bulk_load_features(frame, "item_id", batch, progress)

    def _bulk_load_features(self, frame: pd.DataFrame, id_col: str, batch: int, progress: bool) -> int:
        """Shared body of the two feature bulk loads."""
        _check_batch(batch)
        ids, names, weights = _validated_feature_frame(frame, id_col)
        if len(ids) == 0:
            return 0
        is_user = id_col == "user_id"
        key_of = self._user_key if is_user else self._item_key
        # entity boundaries in the id-sorted arrays: each entity's rows go into one HSET
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.r_[starts[1:], len(ids)]
        names_l, weights_l = names.tolist(), weights.tolist()  # Python floats: redis-py reprs np.float64 badly
        bar = _progress(len(ids), progress, f"{id_col.split('_')[0]} features")
        try:
            for lo in range(0, len(starts), batch):
                chunk = range(lo, min(lo + batch, len(starts)))
                chunk_ids = [ids[starts[e]] for e in chunk]
                with self.client.pipeline(transaction=True) as pipe:
                    for e, entity in zip(chunk, chunk_ids):
                        s, t = starts[e], ends[e]
                        key = key_of(entity)
                        pipe.delete(key)
                        pipe.hset(key, mapping=dict(zip(names_l[s:t], weights_l[s:t])))
                    if is_user:
                        pipe.sadd(self._users_key, *chunk_ids)
                    else:
                        pipe.sadd(self._items_key, *chunk_ids)
                        now = time.time()
                        pipe.zadd(self._changed_key, dict.fromkeys(chunk_ids, now))
                    pipe.execute()
                bar.update(int(ends[chunk[-1]] - starts[chunk[0]]))
        finally:
            bar.close()
        return len(frame)

    @_unavailable_as_domain_error
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
        _check_batch(batch)
        rows = _validated_interaction_frame(frame)
        bar = _progress(len(rows), progress, "interactions")
        try:
            for lo in range(0, len(rows), batch):
                part = rows[lo:lo + batch]
                self._append(part, self._call_guard(), CALL_GUARD_TTL, "")  # its retries append it once
                bar.update(len(part))
        finally:
            bar.close()
        return len(rows)

    # ------------------------------------------------------------------ training snapshot

    @_unavailable_as_domain_error
    def snapshot(self, after_id: str | None = None) -> Snapshot:
        """Read the interaction log (after ``after_id``, exclusive) and every feature hash, for training.

        The log is read with XRANGE in chunks of 10,000 up to the last entry that existed when the call
        began, so a busy writer cannot keep it running. Feature hashes are found with SCAN (TYPE hash)
        of ``{prefix}user:*:features`` / ``{prefix}item:*:features`` and read with pipelined HGETALL;
        ids are recovered by stripping the known prefix and suffix, so ids containing ``:`` work. SCAN
        (not the ``users``/``items`` sets) is used so that features of items kept out of the catalogue
        are included. The tables are read one after the other, not at one point in time; each entity's
        features are consistent (they are written in one transaction). Needs Redis >= 6.2 (exclusive
        XRANGE bounds).

        Raises
        ------
        ValueError
            ``after_id`` is not a stream id like ``1700000000000-0``.
        StoreUnavailableError
            Redis did not answer.
        """
        if after_id is not None and not _is_stream_id(after_id):
            raise ValueError(f"after_id must be a stream id like '1700000000000-0', got {after_id!r}")
        interactions, last_id = self._read_interactions(after_id)
        users = self._read_feature_hashes("user", "user_id")
        items = self._read_feature_hashes("item", "item_id")
        return Snapshot(interactions, users, items, last_id if last_id is not None else after_id)

    def _read_interactions(self, after_id: str | None) -> tuple[pd.DataFrame, str | None]:
        """The log after ``after_id`` as a frame, and the id of the last entry read."""
        newest = self.client.xrevrange(self._stream_key, "+", "-", count=1)
        entry_ids: list[str] = []
        columns: dict[str, list] = {"user_id": [], "item_id": [], "weight": [], "timestamp": []}
        last_id: str | None = None
        if newest:
            end = newest[0][0]
            start = "-" if after_id is None else "(" + after_id
            while True:
                entries = self.client.xrange(self._stream_key, start, end, count=XRANGE_CHUNK)
                if entries:
                    chunk_ids, records = zip(*entries)
                    entry_ids.extend(chunk_ids)
                    for name, values in columns.items():
                        values.extend([record.get(name) for record in records])
                if entries:
                    last_id = entries[-1][0]
                if len(entries) < XRANGE_CHUNK or last_id == end:
                    break
                start = "(" + last_id
        # convert whole columns at once (C speed); entries written by other tools may lack fields
        weight = pd.to_numeric(pd.Series(columns["weight"], dtype=object).fillna("1"), errors="coerce")
        stamp = pd.to_numeric(pd.Series(columns["timestamp"], dtype=object), errors="coerce")
        if stamp.isna().any():  # no usable timestamp: the stream id's milliseconds are the append time
            from_id = pd.Series([int(e.partition("-")[0]) / 1000.0 for e in entry_ids], dtype=np.float64)
            stamp = stamp.fillna(from_id)
        frame = pd.DataFrame({
            "user_id": pd.Series(columns["user_id"], dtype=object),
            "item_id": pd.Series(columns["item_id"], dtype=object),
            "weight": weight.to_numpy(dtype=np.float64),
            "timestamp": stamp.to_numpy(dtype=np.float64),
        })
        good = (frame["user_id"].notna() & frame["item_id"].notna() & (frame["user_id"] != "")
                & (frame["item_id"] != "") & np.isfinite(frame["weight"])).to_numpy()
        if not good.all():
            log.warning("snapshot skipped %d malformed interaction entries", int((~good).sum()))
            frame = frame[good].reset_index(drop=True)
        return frame, last_id

    def _read_feature_hashes(self, kind: str, id_col: str) -> pd.DataFrame:
        """Every ``{prefix}{kind}:{id}:features`` hash as a long frame sorted by id and feature."""
        head = f"{self.prefix}{kind}:"
        pattern = _glob_escape(head) + "*" + _glob_escape(FEATURES_SUFFIX)
        # SCAN may return a key more than once; sort for a deterministic frame
        keys = sorted(set(self.client.scan_iter(match=pattern, count=SCAN_CHUNK, _type="HASH")))
        ids: list[str] = []
        names: list[str] = []
        weights: list[float] = []
        for lo in range(0, len(keys), SCAN_CHUNK):
            part = keys[lo:lo + SCAN_CHUNK]
            with self.client.pipeline(transaction=False) as pipe:
                for key in part:
                    pipe.hgetall(key)
                replies = pipe.execute()
            for key, raw in zip(part, replies):
                entity = key[len(head):-len(FEATURES_SUFFIX)]
                for name, weight in sorted(_parse_features(raw, key).items()):
                    ids.append(entity)
                    names.append(name)
                    weights.append(weight)
        return pd.DataFrame({
            id_col: pd.Series(ids, dtype=object),
            "feature": pd.Series(names, dtype=object),
            "weight": np.asarray(weights, dtype=np.float64),
        })


# ---------------------------------------------------------------------- validation helpers


def _check_features(features: Mapping[str, float]) -> dict[str, float]:
    """Validated {name: float weight}; ValueError on a non-mapping, bad name or bad weight."""
    if not isinstance(features, Mapping):
        raise ValueError(f"features must be a mapping of feature name to weight, got {type(features).__name__}")
    return {check_feature_name(name): check_weight(name, weight) for name, weight in features.items()}


def _check_timestamp(value: object, where: str) -> int | float:
    """A finite, non-negative number of seconds (ints stay ints so the log shows them as written)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where}: timestamp must be a number of seconds, got {value!r}")
    if isinstance(value, (int, np.integer)):
        out: int | float = int(value)
    else:
        out = float(value)
        if not math.isfinite(out):
            raise ValueError(f"{where}: timestamp must be finite, got {out}")
    if out < 0:
        raise ValueError(f"{where}: timestamp must not be negative, got {out}")
    return out


def _check_interaction(record: Mapping, n: int) -> tuple[str, str, float, int | float | None]:
    """(user, item, weight, timestamp) of one interaction record, validated; timestamp None when it has none."""
    where = f"interaction #{n}"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} must be a mapping with user_id and item_id, got {type(record).__name__}")
    for field in ("user_id", "item_id"):
        if field not in record:
            raise ValueError(f"{where} has no {field!r}")
    user = check_id(record["user_id"], f"{where} user_id")
    item = check_id(record["item_id"], f"{where} item_id")
    try:
        weight = check_weight("", record.get("weight", 1.0))
    except ValueError:
        raise ValueError(f"{where}: weight must be a finite number, got {record.get('weight')!r}") from None
    ts = record.get("timestamp")
    return user, item, weight, None if ts is None else _check_timestamp(ts, where)


def _check_idempotency_key(key: object) -> str:
    """The key itself if it is 1 to 255 printable ASCII characters (no spaces), else InvalidIdempotencyKeyError."""
    if (not isinstance(key, str) or not 0 < len(key) <= MAX_IDEMPOTENCY_KEY
            or not all("!" <= c <= "~" for c in key)):
        shown = key[:50] if isinstance(key, str) else key
        raise InvalidIdempotencyKeyError(f"an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters "
                         f"without spaces, got {shown!r}")
    return key


def _fingerprint(rows: Sequence[tuple]) -> str:
    """A digest of validated (user, item, weight, timestamp or None) rows: what a retry must repeat."""
    return hashlib.sha256(repr(list(rows)).encode()).hexdigest()[:32]


def _check_batch(batch: int) -> None:
    """ValueError unless batch is a positive integer."""
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")


def _require_frame(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """ValueError unless frame is a DataFrame with the given columns."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame needs column(s) {missing}, has {list(frame.columns)}")


def _id_array(column: pd.Series, what: str) -> np.ndarray:
    """Canonical ids of a column as an object array; each distinct raw value is checked once."""
    raw = column.to_numpy(dtype=object)
    mapping: dict = {}
    for value in pd.unique(raw):
        mapping[value] = check_id(value, what)
    return np.asarray([mapping[v] for v in raw], dtype=object)


def _weight_array(frame: pd.DataFrame, what: str) -> np.ndarray:
    """The weight column as finite float64 (1.0 when absent); ValueError on anything else."""
    if "weight" not in frame.columns:
        return np.ones(len(frame))
    column = frame["weight"]
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        weights = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        # object columns: numeric strings ("1.5") and booleans are refused, as check_weight refuses them
        weights = np.asarray([check_weight(f"{what} row {n}", v) for n, v in enumerate(column.tolist())],
                             dtype=np.float64)
    _require_finite(weights, f"{what} weight")
    return weights


def _require_finite(values: np.ndarray, what: str, non_negative: bool = False) -> None:
    """ValueError naming the first row where values are NaN, infinite (or negative, if asked)."""
    bad = ~np.isfinite(values)
    if non_negative:
        bad |= values < 0
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        kind = "finite and >= 0" if non_negative else "finite"
        raise ValueError(f"{what} must be {kind}; {int(bad.sum())} bad value(s), first at row {first}: "
                         f"{values[first]!r}")


def _validated_feature_frame(frame: pd.DataFrame, id_col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, names, weights) sorted by id then name, duplicate pairs summed; ValueError on any bad row."""
    _require_frame(frame, (id_col, "feature"))
    ids = _id_array(frame[id_col], id_col)
    raw_names = frame["feature"].to_numpy(dtype=object)
    for name in pd.unique(raw_names):
        check_feature_name(name)
    weights = _weight_array(frame, "feature")
    if len(ids) == 0:
        return ids, raw_names, weights
    summed = (pd.DataFrame({"id": ids, "name": raw_names, "w": weights})
              .groupby(["id", "name"], sort=True)["w"].sum())
    return (summed.index.get_level_values(0).to_numpy(dtype=object),
            summed.index.get_level_values(1).to_numpy(dtype=object), summed.to_numpy(dtype=np.float64))


def _validated_interaction_frame(frame: pd.DataFrame) -> list[tuple[str, str, float, int | float]]:
    """Rows (user, item, weight, timestamp) of an interactions frame; ValueError on any bad row."""
    _require_frame(frame, ("user_id", "item_id"))
    users = _id_array(frame["user_id"], "user_id")
    items = _id_array(frame["item_id"], "item_id")
    weights = _weight_array(frame, "interaction").tolist()
    if "timestamp" in frame.columns:
        column = frame["timestamp"]
        if pd.api.types.is_integer_dtype(column.dtype):
            stamps = column.to_numpy(dtype=np.int64)
            _require_finite(stamps.astype(np.float64), "interaction timestamp", non_negative=True)
            stamp_list: list = stamps.tolist()  # ints stay ints in the log
        elif pd.api.types.is_float_dtype(column.dtype):
            floats = column.to_numpy(dtype=np.float64, na_value=np.nan)
            _require_finite(floats, "interaction timestamp", non_negative=True)
            stamp_list = floats.tolist()
        else:
            stamp_list = [_check_timestamp(v, f"interaction row {n}") for n, v in enumerate(column.tolist())]
    else:
        stamp_list = [time.time()] * len(frame)
    return list(zip(users.tolist(), items.tolist(), weights, stamp_list))


def _two_replies(conn: redis.connection.AbstractConnection, packed: list[bytes]) -> tuple[Any, Any]:
    """Send two pre-packed commands and read both replies; any other failure drops the connection.

    Connection and timeout errors propagate to the retry (which disconnects); an error reply or a
    parse error leaves unread bytes on the socket, so the connection is closed before re-raising.
    """
    try:
        conn.send_packed_command(packed, check_health=False)
        return conn.read_response(), conn.read_response()
    except (RedisConnectionError, RedisTimeoutError):
        raise
    except BaseException:
        conn.disconnect()
        raise


def _drop_connection(conn: redis.connection.AbstractConnection) -> Callable[[Exception], None]:
    """Failure handler of a retried call: disconnect, so that the next try reconnects."""
    return lambda error: conn.disconnect()


def _parse_features(raw: Mapping[str, str], key: str) -> dict[str, float]:
    """Hash fields as floats; fields that are not finite numbers (written by hand?) are dropped and logged."""
    try:  # fast path: everything this module writes parses
        fast = {name: float(value) for name, value in raw.items()}
        if all(map(math.isfinite, fast.values())):
            return fast
    except ValueError:
        pass
    out: dict[str, float] = {}
    for name, value in raw.items():
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if math.isfinite(weight):
            out[name] = weight
        else:
            log.warning("ignoring feature %r of %s: weight %r is not a finite number", name, key, value)
    return out


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so a prefix matches itself literally in SCAN MATCH."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


def _is_stream_id(value: object) -> bool:
    """True for a full stream id such as '1700000000000-0'."""
    if not isinstance(value, str):
        return False
    ms, sep, seq = value.partition("-")
    return bool(sep) and ms.isdigit() and seq.isdigit()


def _progress(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar when enabled, else a do-nothing stand-in with the same update/close."""
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="rows", unit_scale=True)
    return _NoBar()


class _NoBar:
    """Stand-in for a tqdm bar when progress is off."""

    def update(self, n: int = 1) -> None:
        """Ignore progress."""

    def close(self) -> None:
        """Nothing to close."""


__all__ = ["RedisFeatureStore", "Snapshot"]
