"""Feature rows for LightFM: one function builds them for training and for serving.

A row has one column per known id (the indicator, when indicators are on for that side) followed by one
column per feature name seen in training. Keeping a single builder is what guarantees that a row
computed at request time is normalised exactly like the rows the model was trained on.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROW_NORMS = ("features", "together", "none")
MAX_ID_LENGTH = 256
MAX_FEATURE_LENGTH = 256
MAX_WEIGHT = 100.0  # default bound of |weight| for interactions and features (setting MAX_WEIGHT)
# The id grammar, one place for every way an id enters (PUT, POST, bulk loads, query lists): 1 to 256
# characters, none of them a control character, no leading or trailing whitespace, and none of the
# separators of the API: "," (lists in query strings: items=, exclude=) and "/" (path segments:
# /items/<id>/similar). Feature names follow the same rules and also exclude "|" (filter=a|b).
ID_FORBIDDEN = ",/"
FEATURE_FORBIDDEN = ",|"


def normalize_id(value: object) -> str:
    """Return the canonical string form of an external id (5 and "5" are the same id)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"id must be a string or an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    raise ValueError(f"id must be a string or an integer, got {value!r}")


def check_weight(what: str, weight: object, max_abs: float | None = None) -> float:
    """Return the weight as a float, or raise ValueError if it is not a finite number (of at most
    ``max_abs`` in absolute value, when given). ``what`` names its owner in messages ("feature 'a'")."""
    if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, (int, float, np.integer, np.floating)):
        raise ValueError(f"weight of {what} must be a number, got {weight!r}")
    value = float(weight)
    if not math.isfinite(value):
        raise ValueError(f"weight of {what} must be finite, got {value}")
    if max_abs is not None and abs(value) > max_abs:
        raise ValueError(f"weight of {what} is {value:g}; weights must be within [-{max_abs:g}, {max_abs:g}] "
                         f"(MAX_WEIGHT)")
    return value


def _check_text(text: str, what: str, limit: int, forbidden: str) -> str:
    """``text`` if it is 1 to ``limit`` characters without control characters, surrounding whitespace or
    any of ``forbidden``; ValueError naming the first problem otherwise."""
    if not text:
        raise ValueError(f"{what} must not be empty")
    if len(text) > limit:
        raise ValueError(f"{what} is {len(text)} characters long, the limit is {limit}: {text[:40]!r}...")
    if text != text.strip():
        raise ValueError(f"{what} must not start or end with whitespace: {text[:60]!r}")
    for ch in text:
        if ch in forbidden:
            raise ValueError(f"{what} must not contain {ch!r} (a separator of the API): {text[:60]!r}")
        if ord(ch) < 0x20 or 0x7f <= ord(ch) < 0xa0:
            raise ValueError(f"{what} must not contain control characters: {text[:60]!r}")
    return text


def check_id(value: object, what: str = "id") -> str:
    """The canonical id (see normalize_id) if it follows the id grammar (ID_FORBIDDEN above), else ValueError."""
    return _check_text(normalize_id(value), what, MAX_ID_LENGTH, ID_FORBIDDEN)


def check_feature_name(name: object) -> str:
    """The feature name if it is a string following the feature-name grammar, else ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"feature name must be a string, got {name!r}")
    return _check_text(name, "feature name", MAX_FEATURE_LENGTH, FEATURE_FORBIDDEN)


def build_rows(
    n_rows: int,
    n_columns: int,
    indicator_columns: np.ndarray,
    feature_rows: np.ndarray,
    feature_columns: np.ndarray,
    feature_weights: np.ndarray,
    row_norm: str,
) -> sp.csr_matrix:
    """Assemble float32 CSR feature rows from indicator columns and (row, column, weight) triples.

    indicator_columns[r] is the indicator column of row r, or -1 when the row has none. Repeated
    (row, column) pairs are summed. row_norm decides how weights are scaled within a row:
    "features" keeps the indicator at 1 and scales the features to sum (in absolute value) to 1,
    "together" scales indicator and features jointly to sum to 1, "none" leaves them as given.
    Plain numpy (one CSR built at the end), because serving calls this for every request.
    """
    rows, cols, vals = row_entries(n_rows, n_columns, indicator_columns, feature_rows, feature_columns,
                                   feature_weights, row_norm)
    indptr = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return sp.csr_matrix((vals.astype(np.float32), cols.astype(np.int32), indptr), shape=(n_rows, n_columns))


def row_entries(n_rows: int, n_columns: int, indicator_columns, feature_rows, feature_columns, feature_weights,
                row_norm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The normalised (row, column, weight) entries of build_rows, sorted by row then column, no zeros.

    This is where weights are combined and normalised, for training matrices and request rows alike.
    """
    if row_norm not in ROW_NORMS:
        raise ValueError(f"row_norm must be one of {ROW_NORMS}, got {row_norm!r}")
    if n_rows == 1 and len(feature_columns) <= 64:
        return _one_row_entries(int(indicator_columns[0]), feature_columns, feature_weights, row_norm)
    rows = np.asarray(feature_rows, dtype=np.int64)
    cols = np.asarray(feature_columns, dtype=np.int64)
    vals = np.asarray(feature_weights, dtype=np.float64)
    if len(rows):
        keys, inverse = np.unique(rows * n_columns + cols, return_inverse=True)
        vals = np.bincount(inverse.ravel(), weights=vals, minlength=len(keys))
        rows, cols = keys // n_columns, keys % n_columns
    if row_norm == "features":
        vals = vals / _row_sums(rows, vals, n_rows)[rows]
    indicator_columns = np.asarray(indicator_columns, dtype=np.int64)
    ind_rows = np.flatnonzero(indicator_columns >= 0)
    rows = np.concatenate([rows, ind_rows])
    cols = np.concatenate([cols, indicator_columns[ind_rows]])
    vals = np.concatenate([vals, np.ones(len(ind_rows))])
    if row_norm == "together":
        vals = vals / _row_sums(rows, vals, n_rows)[rows]
    keep = vals != 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((cols, rows))
    return rows[order], cols[order], vals[order].astype(np.float32)


def _one_row_entries(indicator: int, columns, weights, row_norm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """row_entries for a single short row (a request), in plain Python: the same arithmetic, no numpy overhead."""
    acc: dict[int, float] = {}
    for col, weight in zip(columns, weights):
        acc[int(col)] = acc.get(int(col), 0.0) + float(weight)
    if row_norm == "features":
        total = sum(abs(v) for v in acc.values()) or 1.0
        acc = {c: v / total for c, v in acc.items()}
    if indicator >= 0:
        acc[indicator] = acc.get(indicator, 0.0) + 1.0
    if row_norm == "together":
        total = sum(abs(v) for v in acc.values()) or 1.0
        acc = {c: v / total for c, v in acc.items()}
    cols = sorted(c for c, v in acc.items() if v != 0)
    # np.array of a short list is ~3x cheaper than np.fromiter over a generator
    return (np.zeros(len(cols), dtype=np.int64), np.array(cols, dtype=np.int64),
            np.array([acc[c] for c in cols], dtype=np.float64).astype(np.float32))


def _row_sums(rows: np.ndarray, vals: np.ndarray, n_rows: int) -> np.ndarray:
    """Sum of absolute weights per row; rows that sum to 0 get 1 (left unscaled)."""
    sums = np.bincount(rows, weights=np.abs(vals), minlength=n_rows)
    sums[sums == 0] = 1.0
    return sums


@dataclass
class FeatureSpace:
    """The columns of one side (users or items): known ids, then feature names seen in training."""

    ids: np.ndarray
    feature_names: np.ndarray
    indicator: bool
    row_norm: str
    id_index: dict = field(init=False, repr=False)
    feature_index: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=object)
        self.feature_names = np.asarray(self.feature_names, dtype=object)
        self.id_index = {k: i for i, k in enumerate(self.ids)}
        if len(self.id_index) != len(self.ids):
            raise ValueError("ids must be unique")
        self.feature_index = {k: i for i, k in enumerate(self.feature_names)}

    @property
    def n_ids(self) -> int:
        """Number of known ids."""
        return len(self.ids)

    @property
    def feature_offset(self) -> int:
        """Column of the first named feature (after the indicator block, if any)."""
        return self.n_ids if self.indicator else 0

    @property
    def n_columns(self) -> int:
        """Width of a feature row."""
        return self.feature_offset + len(self.feature_names)

    def matrix(self, features: pd.DataFrame | None, id_column: str) -> tuple[sp.csr_matrix, Counter]:
        """Rows for every known id, in id order, from long-form features (id, feature, weight).

        Returns the matrix and a Counter of the feature names that were ignored because they are not
        in this space. Rows of ids that are not known are not part of the result.
        """
        n = self.n_ids
        if features is None or len(features) == 0:
            rows = cols = np.zeros(0, dtype=np.int64)
            weights = np.zeros(0)
            ignored: Counter = Counter()
        else:
            ids = features[id_column].map(normalize_id)
            row_idx = ids.map(self.id_index)
            keep_id = row_idx.notna().to_numpy()
            names = features["feature"].astype(str)
            col_idx = names.map(self.feature_index)
            keep = keep_id & col_idx.notna().to_numpy()
            ignored = Counter(names[keep_id & ~keep].tolist())
            weights = frame_weights(features)[keep]
            rows = row_idx[keep].to_numpy(dtype=np.int64)
            cols = col_idx[keep].to_numpy(dtype=np.int64) + self.feature_offset
        ind = np.arange(n) if self.indicator else np.full(n, -1)
        return build_rows(n, self.n_columns, ind, rows, cols, weights, self.row_norm), ignored

    def row(self, entity_id: str | None, feats: Mapping[str, float] | None) -> tuple[np.ndarray, np.ndarray, Counter]:
        """One serving row as (columns, float32 weights) plus ignored feature names; no scipy (request path)."""
        ind = -1
        if self.indicator and entity_id is not None:
            ind = self.id_index.get(entity_id, -1)
        cols: list[int] = []
        weights: list[float] = []
        ignored: Counter = Counter()
        offset = self.feature_offset
        for name, weight in (feats or {}).items():
            w = check_weight(f"feature {name!r}", weight)
            col = self.feature_index.get(name)
            if col is None:
                ignored[name] += 1
                continue
            cols.append(col + offset)
            weights.append(w)
        _, columns, values = row_entries(1, self.n_columns, [ind], [0] * len(cols), cols, weights, self.row_norm)
        return columns, values, ignored


def frame_weights(frame: pd.DataFrame) -> np.ndarray:
    """The weight column as float64 (1.0 when absent); ValueError on NaN, inf or non-numbers."""
    if "weight" not in frame.columns:
        return np.ones(len(frame))
    try:
        weights = pd.to_numeric(frame["weight"], errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"weight column must be numeric: {exc}") from None
    bad = ~np.isfinite(weights)
    if bad.any():
        raise ValueError(f"weight column has {int(bad.sum())} NaN or infinite value(s)")
    return weights


def vocabulary(features: pd.DataFrame | None, id_column: str, known_ids: Iterable[str]) -> np.ndarray:
    """Sorted feature names that occur on known ids (features only unknown ids have are never trained)."""
    if features is None or len(features) == 0:
        return np.zeros(0, dtype=object)
    for col in (id_column, "feature"):
        if col not in features.columns:
            raise ValueError(f"feature frame needs a {col!r} column, has {list(features.columns)}")
    ids = features[id_column].map(normalize_id)
    known = ids.isin(set(known_ids))
    names = features.loc[known, "feature"].astype(str)
    if (names == "").any():
        raise ValueError("feature names must not be empty")
    return np.asarray(sorted(set(names)), dtype=object)
