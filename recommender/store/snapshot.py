"""The training snapshot: the interaction log and every feature hash, read as frames.

Read in chunks (XRANGE of 10,000 entries, SCAN and pipelined HGETALL of 1,000 keys) so that a large store
never blocks Redis for the other clients; see :func:`read_snapshot`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .validation import is_stream_id, parse_features

log = logging.getLogger(__name__)

XRANGE_CHUNK = 10_000  # stream entries per XRANGE call
SCAN_CHUNK = 1_000  # keys per SCAN call and per pipelined HGETALL batch


@dataclass
class Snapshot:
    """Everything needed to train: the interaction log and both long-form feature tables.

    ``last_id`` is the stream id of the last interaction read (pass it back as ``after_id`` to read only
    newer ones), or ``after_id`` itself when nothing newer was there, or None for an empty log.
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
    if after_id is not None and not is_stream_id(after_id):
        raise ValueError(f"after_id must be a stream id like '1700000000000-0', got {after_id!r}")
    interactions, last_id, skipped = _read_interactions(store, after_id)
    users = _read_feature_hashes(store, "user", "user_id")
    items = _read_feature_hashes(store, "item", "item_id")
    return Snapshot(interactions, users, items, last_id if last_id is not None else after_id, skipped)


def _read_interactions(store, after_id: str | None) -> tuple[pd.DataFrame, str | None, dict]:
    """The log after ``after_id`` as a frame, the id of the last entry read, and the skipped-entry counts."""
    newest = store.client.xrevrange(store.keys.interactions, "+", "-", count=1)
    entry_ids: list[str] = []
    columns: dict[str, list] = {"user_id": [], "item_id": [], "weight": [], "timestamp": []}
    last_id: str | None = None
    if newest:
        end = newest[0][0]
        start = "-" if after_id is None else "(" + after_id
        while True:
            entries = store.client.xrange(store.keys.interactions, start, end, count=XRANGE_CHUNK)
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
