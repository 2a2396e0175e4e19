"""Moving a store written by version 0.6 (untagged keys, one interaction stream) to the tagged layout.

Version 0.7 keeps one key layout everywhere (recommender.store.keys), a single Redis included, so that the
code and its tests have one layout to be right about. A Redis that an older version wrote (``make run``
keeps var/redis across versions; a compose volume does too) would look empty to it. :func:`migrate_legacy`
moves such a store over, on the single Redis it lives on (the old layout never ran on a cluster):

- per-entity keys are renamed to their tagged names (``reco:user:u1:seen`` -> ``reco:user:{u1}:seen``),
  keeping their TTLs; the old per-user log lists are dropped (they are rebuilt from the stream);
- the stream ``reco:interactions`` is copied entry by entry, with its entry ids, into the partition of
  each entry's user, and the user's log list in that partition gets the id; then it is deleted;
- ``users`` goes into its partitions; ``items``, ``items:changed``, jobs, the retrain queue, lock and
  active marker, and the client-key guards are renamed; the model pointer keeps its name.

Every step can run again: a rename of a key already moved finds nothing to move, and an entry the copy
already wrote is skipped (its id is not above the partition's last one, and entries are copied in id
order). So an interrupted migration is finished by running it again. Run it before any new-version
process writes to the store (``reco-run`` and the compose ``init`` service do, at start).
"""

from __future__ import annotations

import logging

from .connection import store_errors
from .keys import LegacyKeys

log = logging.getLogger(__name__)

CHUNK = 1000
# Copy one entry into its partition with its id, and its id into the user's log list (same slot); an id not
# above the partition's last one was copied before (entries are copied in id order): skip it.
_COPY_ENTRY_LUA = """
local ok = pcall(redis.call, 'XADD', KEYS[1], ARGV[1], unpack(ARGV, 2))
if ok then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def legacy_keys(store) -> list[str]:
    """The store-wide keys of the old layout that exist (empty: nothing to migrate; always on a cluster)."""
    if store.cluster:
        return []
    names = LegacyKeys(store.prefix).store_wide()
    with store.client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(name)
        found = pipe.execute()
    return [name for name, there in zip(names, found) if there]


@store_errors
def migrate_legacy(store, force_scan: bool = False) -> dict[str, int]:
    """Move a store of the 0.6 layout to the tagged one; returns counts of what moved (all 0: nothing to do).

    Checks a few store-wide keys first (O(1)); only when one of them exists (or ``force_scan``) does it
    scan the prefix for per-entity keys. A no-op on a cluster.

    Raises
    ------
    StoreUnavailableError
        Redis did not answer (run it again: every step is repeatable).
    """
    counts = {"entity_keys": 0, "log_entries": 0, "users": 0, "other_keys": 0}
    if store.cluster or not (legacy_keys(store) or force_scan):
        return counts
    client, keys, old = store.client, store.keys, LegacyKeys(store.prefix)
    patterns = old.patterns()
    log.warning("the store under %r has the layout of version 0.6: migrating it to the tagged layout", store.prefix)
    # 1. per-entity keys
    for key in list(client.scan_iter(match=patterns["user"], count=CHUNK)):
        parsed = old.parse_user_key(key)
        if parsed is None:
            continue
        user, suffix = parsed
        if suffix == old.LOG:
            client.delete(key)  # rebuilt from the stream below
        else:
            counts["entity_keys"] += _rename(client, key, keys.user_key(user, suffix))
    for key in list(client.scan_iter(match=patterns["item"], count=CHUNK)):
        item = old.parse_item_key(key)
        if item is not None:
            counts["entity_keys"] += _rename(client, key, keys.item_features(item))
    # 2. the users set, the catalogue, jobs and guards
    if client.type(old.users) == "set":
        for member in client.sscan_iter(old.users, count=CHUNK):
            client.sadd(keys.users_part(member), member)
            counts["users"] += 1
        client.delete(old.users)
    for before, after in ((old.items, keys.items), (old.items_changed, keys.items_changed),
                          (old.retrain_queue, keys.retrain_queue), (old.retrain_active, keys.retrain_active),
                          (old.retrain_lock, keys.retrain_lock)):
        counts["other_keys"] += _rename(client, before, after)
    for key in list(client.scan_iter(match=patterns["job"], count=CHUNK)):
        counts["other_keys"] += _rename(client, key, keys.job(key[len(old.job_head):]))
    for key in list(client.scan_iter(match=patterns["once"], count=CHUNK)):
        guarded = key[len(old.once_key_head):]
        if not (guarded.startswith("{") and guarded.endswith("}")):
            counts["other_keys"] += _rename(client, key, keys.once_key(guarded))
    # 3. the stream, last: its entries in id order, into their users' partitions (with their ids)
    if client.type(old.interactions) == "stream":
        copy = client.register_script(_COPY_ENTRY_LUA)
        start = "-"
        while True:
            entries = client.xrange(old.interactions, start, "+", count=CHUNK)
            if not entries:
                break
            with client.pipeline(transaction=False) as pipe:
                for entry_id, fields in entries:
                    user = fields.get("user_id", "")
                    flat = [v for pair in fields.items() for v in pair]
                    copy(keys=[keys.log_partition(user), keys.user_log(user)], args=[entry_id, *flat], client=pipe)
                counts["log_entries"] += sum(pipe.execute())
            start = "(" + entries[-1][0]
        client.delete(old.interactions)
    log.warning("migration done: %s", counts)
    return counts


def _rename(client, old: str, new: str) -> int:
    """Rename ``old`` to ``new`` (TTL kept) unless ``new`` exists already; 1 if it moved."""
    try:
        return int(bool(client.renamenx(old, new)))
    except Exception as exc:  # noqa: BLE001 - "no such key": moved by an earlier run
        if "no such key" in str(exc).lower():
            return 0
        raise
