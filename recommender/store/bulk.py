"""Bulk loads: whole frames of features or interactions, validated first, then written in batches.

Each batch of feature rows is one pipeline (per node on a Redis Cluster: one round trip each) of one
script call per entity that deletes and refills its hash (atomic per entity, whatever slot it is in), then
the catalogue or users-set writes of the batch; each batch of interactions is written as
add_interactions writes it (one guarded script call per slot, see recommender.store.interactions), so a
client-side retry of a batch that Redis had already written appends nothing.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from .connection import LuaScript
from .validation import check_batch, validated_feature_frame, validated_interaction_frame

# Replace one hash: delete it and write the fields (ARGV: field, value, ...) in HSETs of 1,000 pairs (Lua's
# unpack has a stack limit), atomically: a reader sees the old set or the new one.
REPLACE_HASH = LuaScript("""
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 2000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 1999, #ARGV)))
end
return 1
""")


def load_features(store, frame: pd.DataFrame, id_col: str, batch: int, progress: bool) -> int:
    """Load long-form features (see RedisFeatureStore.bulk_load_user_features); returns the number of rows."""
    check_batch(batch)
    ids, names, weights = validated_feature_frame(frame, id_col, store.max_weight)
    if len(ids) == 0:
        return 0
    is_user = id_col == "user_id"
    key_of = store.keys.user_features if is_user else store.keys.item_features
    # entity boundaries in the id-sorted arrays: each entity's rows go into one HSET
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    names_l, weights_l = names.tolist(), weights.tolist()  # Python floats: redis-py reprs np.float64 badly
    bar = progress_bar(len(ids), progress, f"{id_col.split('_')[0]} features")
    try:
        for lo in range(0, len(starts), batch):
            chunk = range(lo, min(lo + batch, len(starts)))
            chunk_ids = [ids[starts[e]] for e in chunk]
            calls = []
            for e, entity in zip(chunk, chunk_ids):
                s, t = starts[e], ends[e]
                calls.append(([key_of(entity)], [v for pair in zip(names_l[s:t], weights_l[s:t]) for v in pair]))
            for reply in REPLACE_HASH.many(store.client, calls, store.connections):
                if isinstance(reply, Exception):
                    raise reply
            with store.client.pipeline(transaction=False) as pipe:
                if is_user:
                    parts: dict[str, list] = {}
                    for entity in chunk_ids:
                        parts.setdefault(store.keys.users_part(entity), []).append(entity)
                    for part, members in parts.items():
                        pipe.sadd(part, *members)
                else:
                    pipe.sadd(store.keys.items, *chunk_ids)
                    pipe.zadd(store.keys.items_changed, dict.fromkeys(chunk_ids, time.time()))
                pipe.execute()
            bar.update(int(ends[chunk[-1]] - starts[chunk[0]]))
    finally:
        bar.close()
    return len(frame)


def load_interactions(store, frame: pd.DataFrame, batch: int, progress: bool) -> int:
    """Append interactions (see RedisFeatureStore.bulk_load_interactions); returns the number of rows."""
    check_batch(batch)
    rows = validated_interaction_frame(frame, store.max_weight)
    bar = progress_bar(len(rows), progress, "interactions")
    try:
        for lo in range(0, len(rows), batch):
            part = rows[lo:lo + batch]
            store.interaction_log.append(part)  # its retries append it once
            bar.update(len(part))
    finally:
        bar.close()
    return len(rows)


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
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
