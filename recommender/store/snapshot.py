"""The training snapshot: the interaction log (all its partitions) and every feature hash, read as frames.

Read in chunks (XRANGE of 10,000 entries per partition, pipelined across partitions; SCAN of every master
and pipelined HGETALL of 1,000 keys) so that a large store never blocks Redis for the other clients; see
:func:`read_snapshot`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .validation import is_stream_id, parse_features

CURSOR_SEPARATOR = ","  # between the last stream ids of the partitions in a cursor (Snapshot.last_id)

log = logging.getLogger(__name__)

XRANGE_CHUNK = 10_000  # stream entries per XRANGE call
SCAN_CHUNK = 1_000  # keys per SCAN call and per pipelined HGETALL batch


@dataclass
class Snapshot:
    """Everything needed to train: the interaction log and both long-form feature tables.

    ``last_id`` is a cursor: the stream id of the last interaction read in each partition of the log,
    comma-separated in partition order (``0-0`` for a partition read empty); pass it back as ``after_id``
    to read only newer ones. It is ``after_id`` itself when nothing newer was there, None for an empty log.
    The partitions' ids come from the clocks of the nodes that hold them, so one id could not mark a point
    in all of them.
    ``skipped`` counts log entries that could not be used and were left out: ``malformed`` (no user or
    item, a weight that is not a finite number) and ``weight_out_of_range`` (|weight| > MAX_WEIGHT,
    written before the bound or by another tool).
    """

    interactions: pd.DataFrame  # user_id, item_id, weight, timestamp
    user_features: pd.DataFrame  # user_id, feature, weight
    item_features: pd.DataFrame  # item_id, feature, weight
    last_id: str | None
    skipped: dict = field(default_factory=dict)


def read_snapshot(store, after_id: str | None = None) -> Snapshot:
    """Read the interaction log (after the cursor ``after_id``, exclusive) and every feature hash, for training.

    Each partition of the log is read with XRANGE in chunks of 10,000 (one pipeline per round for all
    partitions: a round trip per node) up to the last entry it held when the call began, so a busy
    writer cannot keep it running. The partitions are merged in the order of their stream ids (ties by
    partition): every user's entries keep the order they were written in (a user's entries are all in
    one partition), and the frame is the same whenever the store holds the same log. Feature hashes are
    found with SCAN (TYPE hash; of every master on a cluster) of ``{prefix}user:{*}:features`` /
    ``{prefix}item:{*}:features`` and read with pipelined HGETALL; ids are recovered by stripping the
    known prefix and suffix, so ids containing ``:`` or braces work. SCAN (not the ``users``/``items``
    sets) is used so that features of items kept out of the catalogue are included. The tables are read
    one after the other, not at one point in time; each entity's features are consistent (they are
    written in one transaction). Needs Redis >= 6.2 (exclusive XRANGE bounds).

    Raises
    ------
    ValueError
        ``after_id`` is not a cursor from ``Snapshot.last_id`` of this store's log.
    StoreUnavailableError
        Redis did not answer.
    """
    parts = len(store.keys.interactions)
    starts = parse_cursor(after_id, parts) if after_id is not None else None
    interactions, last_id, skipped = _read_interactions(store, starts)
    users = _read_feature_hashes(store, "user", "user_id")
    items = _read_feature_hashes(store, "item", "item_id")
    return Snapshot(interactions, users, items, last_id if last_id is not None else after_id, skipped)


def parse_cursor(cursor: str, parts: int) -> list[str]:
    """The per-partition stream ids of a Snapshot.last_id cursor; ValueError if it is not one."""
    ids = cursor.split(CURSOR_SEPARATOR) if isinstance(cursor, str) else []
    if len(ids) != parts or not all(is_stream_id(i) for i in ids):
        raise ValueError(f"after_id must be a cursor of {parts} comma-separated stream ids (Snapshot.last_id), "
                         f"got {cursor!r}")
    return ids


def _read_interactions(store, starts: list[str] | None) -> tuple[pd.DataFrame, str | None, dict]:
    """The log after the per-partition ids ``starts`` (None: all of it) as a frame, the cursor of the last
    entries read, and the skipped-entry counts."""
    parts = store.keys.interactions.keys
    with store.client.pipeline(transaction=False) as pipe:
        for key in parts:
            pipe.xrevrange(key, "+", "-", count=1)
        newest = [reply[0][0] if reply else None for reply in pipe.execute()]
    last = list(starts) if starts is not None else ["0-0"] * len(parts)
    begin = {p: ("-" if starts is None else "(" + starts[p]) for p, end in enumerate(newest) if end is not None}
    ms_l: list[int] = []
    seq_l: list[int] = []
    part_l: list[int] = []
    records: list[dict] = []
    while begin:
        todo = sorted(begin)
        with store.client.pipeline(transaction=False) as pipe:
            for p in todo:
                pipe.xrange(parts[p], begin[p], newest[p], count=XRANGE_CHUNK)
            replies = pipe.execute()
        for p, entries in zip(todo, replies):
            for entry_id, record in entries:
                ms, _, seq = entry_id.partition("-")
                ms_l.append(int(ms))
                seq_l.append(int(seq))
                records.append(record)
            part_l.extend([p] * len(entries))
            if entries:
                last[p] = entries[-1][0]
            if len(entries) < XRANGE_CHUNK or last[p] == newest[p]:
                del begin[p]
            else:
                begin[p] = "(" + last[p]
    order = np.lexsort((np.asarray(part_l, dtype=np.int64), np.asarray(seq_l, dtype=np.int64),
                        np.asarray(ms_l, dtype=np.int64)))  # by stream id, then partition
    entry_ms = np.asarray(ms_l, dtype=np.float64)[order]
    records = [records[i] for i in order]
    columns: dict[str, list] = {name: [record.get(name) for record in records]
                                for name in ("user_id", "item_id", "weight", "timestamp")}
    if starts is None and not records:
        last_id = None
    else:
        last_id = CURSOR_SEPARATOR.join(last)
    # convert whole columns at once (C speed); entries written by other tools may lack fields
    weight = pd.to_numeric(pd.Series(columns["weight"], dtype=object).fillna("1"), errors="coerce")
    stamp = pd.to_numeric(pd.Series(columns["timestamp"], dtype=object), errors="coerce")
    if stamp.isna().any():  # no usable timestamp: the stream id's milliseconds are the append time
        stamp = stamp.fillna(pd.Series(entry_ms / 1000.0))
    frame = pd.DataFrame({
        "user_id": pd.Series(columns["user_id"], dtype=object),
        "item_id": pd.Series(columns["item_id"], dtype=object),
        "weight": weight.to_numpy(dtype=np.float64),
        "timestamp": stamp.to_numpy(dtype=np.float64),
    })
    good = (frame["user_id"].notna() & frame["item_id"].notna() & (frame["user_id"] != "")
            & (frame["item_id"] != "") & np.isfinite(frame["weight"])).to_numpy()
    in_range = (np.abs(frame["weight"].to_numpy()) <= store.max_weight) | ~good
    skipped = {"malformed": int((~good).sum()), "weight_out_of_range": int((~in_range).sum())}
    if not (good & in_range).all():
        log.warning("snapshot skipped interaction entries it cannot use: %s", skipped)
        frame = frame[good & in_range].reset_index(drop=True)
    return frame, last_id, skipped


def _read_feature_hashes(store, kind: str, id_col: str) -> pd.DataFrame:
    """Every ``{prefix}{kind}:{id}:features`` hash as a long frame sorted by id and feature."""
    pattern = store.keys.feature_pattern(kind)
    # SCAN may return a key more than once; sort for a deterministic frame
    keys = sorted(set(store.client.scan_iter(match=pattern, count=SCAN_CHUNK, _type="HASH")))
    ids: list[str] = []
    names: list[str] = []
    weights: list[float] = []
    for lo in range(0, len(keys), SCAN_CHUNK):
        part = keys[lo:lo + SCAN_CHUNK]
        with store.client.pipeline(transaction=False) as pipe:
            for key in part:
                pipe.hgetall(key)
            replies = pipe.execute()
        for key, raw in zip(part, replies):
            entity = store.keys.entity_of_feature_key(kind, key)
            for name, weight in sorted(parse_features(raw, key).items()):
                ids.append(entity)
                names.append(name)
                weights.append(weight)
    return pd.DataFrame({
        id_col: pd.Series(ids, dtype=object),
        "feature": pd.Series(names, dtype=object),
        "weight": np.asarray(weights, dtype=np.float64),
    })
