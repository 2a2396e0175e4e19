"""The interaction log's write path: one atomic, guarded Lua script call per slot a batch touches, exactly once.

A record goes to two places: the log side (its user's partition of the stream, and the stream id into the
user's log list in the same slot: what erasure deletes) and the user side (the user's seen, negative and
recent sets, in the user's slot: what a request reads). The rows of a batch are grouped by slot:

- on one Redis there is one group, the whole batch: one script call, atomic, guarded by one once-only key;
- on a Redis Cluster, one group per slot (a log partition's, a user's), one script call each (pipelined:
  one round trip per node), atomic per slot. A group holding log rows is guarded by its own once-only key
  in its slot, named after the batch's guard; user-side writes are set additions and removals, the same
  whatever number of times they run, and need none.

The guard makes a retry of a batch that Redis had already written (after a timeout, say) append nothing.
With a client's Idempotency-Key the guard is that key, remembered for a TTL; without one it is random per
call and only guards that call's own retries. What a retry can and cannot repeat:

- never a log entry: each log-side group is written once per guard, by one script call;
- on a cluster, a batch that failed half way (a node down, a timeout) may stand half written until it is
  retried: some slots written, others not; the log entry of a record may exist before its seen set holds
  the item, or the other way round. A retry with the same Idempotency-Key writes exactly the groups that
  are missing and re-applies the user-side sets (no change where they were written);
- without an Idempotency-Key, a new call is a new batch: the client's retry after a lost reply appends
  again (that is what the key is for); the store's own retries of a call never do.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..errors import IdempotencyConflictError
from .connection import LuaScript
from .keys import slot_of, tag
from .validation import check_idempotency_key, check_interaction, fingerprint

# One call writes the rows of one group (see the module docstring), in the order given, all or nothing.
# ARGV[1] the guard's TTL (s), ARGV[2] the batch's fingerprint, ARGV[3] each log partition's length limit
# (0: none; exact MAXLEN), ARGV[4] the recent set's size, ARGV[5] the time of the write, ARGV[6] 1 if
# KEYS[1] is a guard, ARGV[7] log rows, ARGV[8] user rows, ARGV[9] the batch's record count (what the guard
# keeps); then user, item, weight, ts per log row; then item, weight per user row.
# KEYS: [guard], then stream partition and log list per log row, then seen, negative, recent per user row.
# Log row: XADD (trimmed to the limit), RPUSH of the new id to the user's log list (trimmed to 2 x limit +
# 1000, which always covers what the partition still holds of that user). User row: SADD seen; a weight
# <= 0 also SADD negative and ZREM recent (never recommended back, never folded in); a positive one ZADD
# recent at the write time (the newest RECENT_ITEMS kept: what fold-in reads; the write time, not the
# record's timestamp, tells whether a model's training snapshot had it). If the guard exists the group was
# written before (a retry): nothing is written and the guard's "<count>:<fingerprint>" comes back.
# One command per group is also ~3x faster than a MULTI of several commands per row (redis-py's per-command
# cost dominates a bulk load).
_APPEND_LUA = """
local guarded = tonumber(ARGV[6]) == 1
if guarded then
  local prev = redis.call('GET', KEYS[1])
  if prev then return {0, prev} end
end
local limit = tonumber(ARGV[3])
local recent = tonumber(ARGV[4])
local k = guarded and 1 or 0
local a = 9
for i = 1, tonumber(ARGV[7]) do
  local id
  if limit > 0 then
    id = redis.call('XADD', KEYS[k + 1], 'MAXLEN', limit, '*', 'user_id', ARGV[a + 1], 'item_id', ARGV[a + 2],
                    'weight', ARGV[a + 3], 'timestamp', ARGV[a + 4])
  else
    id = redis.call('XADD', KEYS[k + 1], '*', 'user_id', ARGV[a + 1], 'item_id', ARGV[a + 2],
                    'weight', ARGV[a + 3], 'timestamp', ARGV[a + 4])
  end
  redis.call('RPUSH', KEYS[k + 2], id)
  if limit > 0 then redis.call('LTRIM', KEYS[k + 2], -(2 * limit + 1000), -1) end
  k = k + 2
  a = a + 4
end
for i = 1, tonumber(ARGV[8]) do
  redis.call('SADD', KEYS[k + 1], ARGV[a + 1])
  if tonumber(ARGV[a + 2]) <= 0 then
    redis.call('SADD', KEYS[k + 2], ARGV[a + 1])
    redis.call('ZREM', KEYS[k + 3], ARGV[a + 1])
  elseif recent > 0 then
    redis.call('ZADD', KEYS[k + 3], ARGV[5], ARGV[a + 1])
    redis.call('ZREMRANGEBYRANK', KEYS[k + 3], 0, -(recent + 1))
  end
  k = k + 3
  a = a + 2
end
if guarded then redis.call('SET', KEYS[1], ARGV[9] .. ':' .. ARGV[2], 'EX', ARGV[1]) end
return {1, ARGV[9]}
"""
APPEND = LuaScript(_APPEND_LUA)
RECENT_ITEMS = 50  # positive items per user kept with their time in the recent set (what fold-in may use)
# A call's own guard only has to outlive the client's retries of that call (well under a second).
CALL_GUARD_TTL = 60


@dataclass(frozen=True)
class WriteResult:
    """What an interaction write did: rows in the batch, and whether an earlier write of it stood instead."""

    written: int
    replayed: bool


@dataclass
class _Group:
    """The rows of a batch that one script call writes (one slot on a cluster; everything on one Redis)."""

    tag: str  # a hash tag of the group's slot (escaped), for its guard's name
    log: list = field(default_factory=list)  # (stream, log list, user, item, weight, ts)
    user: list = field(default_factory=list)  # (seen, negative, recent, item, weight)


class InteractionLog:
    """Appends to one store's interaction log (stream partitions + per-user sets) through the guarded script."""

    def __init__(self, store):
        self.store = store

    def write(self, records: Iterable[Mapping], idempotency_key: str | None, ttl: int) -> WriteResult:
        """Validate every record, then write the batch once (see RedisFeatureStore.add_interactions_once)."""
        if idempotency_key is not None:
            idempotency_key = check_idempotency_key(idempotency_key)
            if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
                raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        else:
            ttl = CALL_GUARD_TTL
        max_weight = self.store.max_weight
        given = [check_interaction(record, n, max_weight) for n, record in enumerate(records)]
        if not given:
            return WriteResult(0, False)
        now = time.time()
        rows = [(user, item, weight, now if ts is None else ts) for user, item, weight, ts in given]
        return self._write(rows, idempotency_key, ttl, fingerprint(given))

    def append(self, rows: Sequence[tuple]) -> int:
        """Write (user, item, weight, ts) rows, already validated, guarded by a fresh call guard (bulk loads);
        returns the number of rows."""
        return self._write(rows, None, CALL_GUARD_TTL, "").written

    def _write(self, rows: Sequence[tuple], key: str | None, ttl: int, digest: str) -> WriteResult:
        store, keys = self.store, self.store.keys
        token = None if key is not None else uuid.uuid4().hex
        count = len(rows)
        limit = math.ceil(store.max_interactions / len(keys.interactions)) if store.max_interactions else 0
        head = [ttl, digest, limit, RECENT_ITEMS, repr(time.time())]
        if not store.cluster:  # one group, one call, guarded by the batch's own guard
            group = self._groups(rows, single=True)[0]
            guard = keys.once_key(key) if key is not None else keys.once_call(token)
            fresh, value = APPEND(store.client, *self._call(group, guard, head, count))
            if fresh:
                return WriteResult(int(value), False)
            return self._replay(value, digest, key)
        existed = False
        if key is not None:  # the key's own guard: refuses other records before anything is written
            guard = keys.once_key(key)
            if not store.client.set(guard, f"{count}:{digest}", nx=True, ex=ttl):
                earlier = store.client.get(guard)
                if earlier is not None:
                    self._replay(earlier, digest, key)  # raises on other records
                    existed = True
        groups = self._groups(rows, single=False)
        calls = [self._call(g, keys.once_in_slot(g.tag, key, token) if g.log else None, head, count)
                 for g in groups]
        replies = APPEND.many(store.client, calls, store.connections)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        replayed = existed
        for group, (fresh, value) in zip(groups, replies):
            if group.log and not fresh:
                self._replay(value, digest, key)
            elif group.log:
                replayed = False
        return WriteResult(count, replayed)

    @staticmethod
    def _replay(value: Any, digest: str, key: str | None) -> WriteResult:
        """The WriteResult of a guard found in place, or IdempotencyConflictError if it guards other records."""
        written, _, earlier = str(value).partition(":")
        if earlier != digest:
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was already used for a different batch of interactions")
        return WriteResult(int(written), True)

    def _groups(self, rows: Sequence[tuple], single: bool) -> list[_Group]:
        """The rows by slot (all in one group on one Redis), in the order their slots first appear."""
        keys = self.store.keys
        parts = keys.interactions
        part_slots = [slot_of(k) for k in parts.keys]
        groups: dict[int, _Group] = {}
        users: dict[str, tuple] = {}  # user -> its keys, tags and slots (built once per user and batch)
        for user, item, weight, ts in rows:
            where = users.get(user)
            if where is None:
                slot, p, stream, log_list, seen, negative, recent = keys.interaction_keys(user)
                where = users[user] = (0 if single else part_slots[p], parts.tags[p], (stream, log_list),
                                       0 if single else slot, tag(user), (seen, negative, recent))
            slot_log, part_tag, log_keys, slot_user, user_tag, user_keys = where
            group = groups.get(slot_log) or groups.setdefault(slot_log, _Group(part_tag))
            group.log.append((*log_keys, user, item, weight, ts))
            group = groups.get(slot_user) or groups.setdefault(slot_user, _Group(user_tag))
            group.user.append((*user_keys, item, weight))
        return list(groups.values())

    @staticmethod
    def _call(group: _Group, guard: str | None, head: list, count: int) -> tuple[list, list]:
        """KEYS and ARGV of one script call for a group."""
        script_keys = [guard] if guard else []
        args = head + [1 if guard else 0, len(group.log), len(group.user), count]
        for stream, log_list, user, item, weight, ts in group.log:
            script_keys += [stream, log_list]
            args += [user, item, weight, ts]
        for seen, negative, recent, item, weight in group.user:
            script_keys += [seen, negative, recent]
            args += [item, weight]
        return script_keys, args


__all__ = ["InteractionLog", "WriteResult", "RECENT_ITEMS", "CALL_GUARD_TTL"]
