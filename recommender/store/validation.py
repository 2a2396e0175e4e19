"""Validation of what enters the store (records, frames, idempotency keys) and parsing of what comes out.

Every input is checked before anything is written, so a bad record or row never leaves a half-written
batch; messages name the record or row and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import InvalidIdempotencyKeyError
from ..features import MAX_WEIGHT, check_feature_name, check_id, check_weight
from .keys import EMPTY_MARKER

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 255


def check_features(features: Mapping[str, float], max_weight: float = MAX_WEIGHT) -> dict[str, float]:
    """Validated {name: float weight}; ValueError on a non-mapping, bad name or bad weight (|w| > max_weight)."""
    if not isinstance(features, Mapping):
        raise ValueError(f"features must be a mapping of feature name to weight, got {type(features).__name__}")
    return {check_feature_name(name): check_weight(f"feature {name!r}", weight, max_weight)
            for name, weight in features.items()}


def check_timestamp(value: object, where: str) -> int | float:
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


def check_interaction(record: Mapping, n: int,
                      max_weight: float = MAX_WEIGHT) -> tuple[str, str, float, int | float | None]:
    """(user, item, weight, timestamp) of one interaction record, validated; timestamp None when it has none.

    The weight (default 1.0) must be a finite number within [-max_weight, max_weight]; weight <= 0 is a
    negative signal (see README, "Data").
    """
    where = f"interaction #{n}"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} must be a mapping with user_id and item_id, got {type(record).__name__}")
    for field in ("user_id", "item_id"):
        if field not in record:
            raise ValueError(f"{where} has no {field!r}")
    user = check_id(record["user_id"], f"{where} user_id")
    item = check_id(record["item_id"], f"{where} item_id")
    weight = check_weight(where, record.get("weight", 1.0), max_weight)
    ts = record.get("timestamp")
    return user, item, weight, None if ts is None else check_timestamp(ts, where)


def check_idempotency_key(key: object) -> str:
    """The key itself if it is 1 to 255 printable ASCII characters (no spaces), else InvalidIdempotencyKeyError."""
    if (not isinstance(key, str) or not 0 < len(key) <= MAX_IDEMPOTENCY_KEY
            or not all("!" <= c <= "~" for c in key)):
        shown = key[:50] if isinstance(key, str) else key
        raise InvalidIdempotencyKeyError(f"an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters "
                         f"without spaces, got {shown!r}")
    return key


def fingerprint(rows: Sequence[tuple]) -> str:
    """A digest of validated (user, item, weight, timestamp or None) rows: what a retry must repeat."""
    return hashlib.sha256(repr(list(rows)).encode()).hexdigest()[:32]


def check_batch(batch: int) -> None:
    """ValueError unless batch is a positive integer."""
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")


def require_frame(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """ValueError unless frame is a DataFrame with the given columns."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame needs column(s) {missing}, has {list(frame.columns)}")


def id_array(column: pd.Series, what: str) -> np.ndarray:
    """Canonical ids of a column as an object array; each distinct raw value is checked once."""
    raw = column.to_numpy(dtype=object)
    mapping: dict = {}
    for value in pd.unique(raw):
        mapping[value] = check_id(value, what)
    return np.asarray([mapping[v] for v in raw], dtype=object)


def weight_array(frame: pd.DataFrame, what: str, max_weight: float = MAX_WEIGHT) -> np.ndarray:
    """The weight column as finite float64 within [-max_weight, max_weight] (1.0 when absent); ValueError on
    anything else."""
    if "weight" not in frame.columns:
        return np.ones(len(frame))
    column = frame["weight"]
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        weights = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        # object columns: numeric strings ("1.5") and booleans are refused, as check_weight refuses them
        weights = np.asarray([check_weight(f"{what} row {n}", v) for n, v in enumerate(column.tolist())],
                             dtype=np.float64)
    require_finite(weights, f"{what} weight")
    big = np.abs(weights) > max_weight
    if big.any():
        first = int(np.flatnonzero(big)[0])
        raise ValueError(f"{what} weights must be within [-{max_weight:g}, {max_weight:g}] (MAX_WEIGHT); "
                         f"{int(big.sum())} outside, first at row {first}: {weights[first]!r}")
    return weights


def require_finite(values: np.ndarray, what: str, non_negative: bool = False) -> None:
    """ValueError naming the first row where values are NaN, infinite (or negative, if asked)."""
    bad = ~np.isfinite(values)
    if non_negative:
        bad |= values < 0
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        kind = "finite and >= 0" if non_negative else "finite"
        raise ValueError(f"{what} must be {kind}; {int(bad.sum())} bad value(s), first at row {first}: "
                         f"{values[first]!r}")


def validated_feature_frame(frame: pd.DataFrame, id_col: str,
                            max_weight: float = MAX_WEIGHT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, names, weights) sorted by id then name, duplicate pairs summed; ValueError on any bad row."""
    require_frame(frame, (id_col, "feature"))
    ids = id_array(frame[id_col], id_col)
    raw_names = frame["feature"].to_numpy(dtype=object)
    for name in pd.unique(raw_names):
        check_feature_name(name)
    weights = weight_array(frame, "feature", max_weight)
    if len(ids) == 0:
        return ids, raw_names, weights
    summed = (pd.DataFrame({"id": ids, "name": raw_names, "w": weights})
              .groupby(["id", "name"], sort=True)["w"].sum())
    return (summed.index.get_level_values(0).to_numpy(dtype=object),
            summed.index.get_level_values(1).to_numpy(dtype=object), summed.to_numpy(dtype=np.float64))


def validated_interaction_frame(frame: pd.DataFrame,
                                max_weight: float = MAX_WEIGHT) -> list[tuple[str, str, float, int | float]]:
    """Rows (user, item, weight, timestamp) of an interactions frame; ValueError on any bad row."""
    require_frame(frame, ("user_id", "item_id"))
    users = id_array(frame["user_id"], "user_id")
    items = id_array(frame["item_id"], "item_id")
    weights = weight_array(frame, "interaction", max_weight).tolist()
    if "timestamp" in frame.columns:
        column = frame["timestamp"]
        if pd.api.types.is_integer_dtype(column.dtype):
            stamps = column.to_numpy(dtype=np.int64)
            require_finite(stamps.astype(np.float64), "interaction timestamp", non_negative=True)
            stamp_list: list = stamps.tolist()  # ints stay ints in the log
        elif pd.api.types.is_float_dtype(column.dtype):
            floats = column.to_numpy(dtype=np.float64, na_value=np.nan)
            require_finite(floats, "interaction timestamp", non_negative=True)
            stamp_list = floats.tolist()
        else:
            stamp_list = [check_timestamp(v, f"interaction row {n}") for n, v in enumerate(column.tolist())]
    else:
        stamp_list = [time.time()] * len(frame)
    return list(zip(users.tolist(), items.tolist(), weights, stamp_list))


def parse_features(raw: Mapping[str, str], key: str) -> dict[str, float]:
    """Hash fields as floats; fields that are not finite numbers (written by hand?) are dropped and logged.

    The empty-set marker (field "", see recommender.store.keys.EMPTY_MARKER) is not a feature: a hash that
    holds only the marker parses to {}.
    """
    if EMPTY_MARKER in raw:
        raw = {name: value for name, value in raw.items() if name != EMPTY_MARKER}
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


def is_stream_id(value: object) -> bool:
    """True for a full stream id such as '1700000000000-0'."""
    if not isinstance(value, str):
        return False
    ms, sep, seq = value.partition("-")
    return bool(sep) and ms.isdigit() and seq.isdigit()
