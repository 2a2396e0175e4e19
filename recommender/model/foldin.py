"""Serving policy: how each population of users is scored, chosen by validation at every retrain.

Four populations (README, "Who is served how"): warm users (known to the model), feature-only users
(unknown, with features), fresh users (unknown, with interactions the model did not train on; a known
user's new interactions are folded in the same way) and anonymous users (popularity).

Two mechanisms. Before a trainer has validated a policy, fold-in is off and only fresh users are blended
(with co-occurrence: what a user just did beats nothing); every other score is LightFM's own.

*Fold-in* (:class:`FoldIn`) moves a user's vector by the items it interacted with since training, the item
side being frozen per model version:

``mean``
    u = u0 + strength * weighted mean of the items' representations.
``ls``
    the least-squares user vector with the item side fixed: it scores the interacted items near
    ``strength`` and every item near 0 (weight ``negatives``, through the items' k x k Gram matrix,
    computed once per model), pulled towards u0 with weight ``prior``:
    u = (V_S' W V_S + negatives * |S| * G + prior * I)^-1 (V_S' W (strength - b_S) + prior * u0).
``off``
    the vector stays u0 (the user's training-time or feature representation, or none).

*Blends* (:class:`Blend`, one per population) add other rankers to the model's, each standardised over
the candidates: score = z(model) + cooc * z(co-occurrence with the user's items) + popularity *
z(log popularity). Co-occurrence (:class:`ItemNeighbors`) is the cosine over the users who interacted
with two items, the top 50 neighbours per item, from the training interactions; "the user's items" are
its training items (known users) plus what it did since. A blend's scores are not LightFM's: their own
reference test checks them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np
import scipy.sparse as sp
from scipy.linalg import LinAlgError, lapack

FOLD_IN_METHODS = ("off", "mean", "ls")
DENSE_BELOW = 20_000  # catalogues up to this size sum co-occurrence densely (no sort)
FEATURE_USER_STRATEGIES = ("model", "popularity")


@dataclass(frozen=True)
class FoldIn:
    """How interactions the model did not train on move a user's vector (see the module docstring).

    ``half_life_hours`` weights each interaction by 0.5 ** (age / half life) when given (None: equal).
    """

    method: str = "off"
    strength: float = 1.0
    prior: float = 10.0
    negatives: float = 2.0
    half_life_hours: float | None = None

    def __post_init__(self) -> None:
        if self.method not in FOLD_IN_METHODS:
            raise ValueError(f"fold-in method must be one of {FOLD_IN_METHODS}, got {self.method!r}")
        for name in ("strength", "prior", "negatives"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"fold-in {name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.half_life_hours is not None and not self.half_life_hours > 0:
            raise ValueError(f"half_life_hours must be > 0 or None, got {self.half_life_hours!r}")

    def weights(self, times: Mapping[str, float], now: float) -> dict[str, float]:
        """Item -> weight from item -> time of the interaction (seconds), by this fold-in's recency rule."""
        if self.half_life_hours is None:
            return {item: 1.0 for item in times}
        half_life = self.half_life_hours * 3600.0
        return {item: 0.5 ** (max(0.0, now - t) / half_life) for item, t in times.items()}

    def moved_query(self, u0: np.ndarray, rows: np.ndarray, weights: np.ndarray, gram: np.ndarray) -> np.ndarray:
        """The user vector (k,): ``u0`` (k,) moved by the interacted items' rows (n, k + 1) = [representation,
        bias] with weights (n,); ``gram`` is the known items' V'V / n_items."""
        if self.method == "off":
            return u0
        rows = rows.astype(np.float64)
        reps, biases = rows[:, :-1], rows[:, -1]
        w = weights / weights.sum()
        if self.method == "mean":
            return u0 + self.strength * (w @ reps)
        weighted = reps * w[:, None]
        a = reps.T @ weighted * len(w) + self.negatives * len(w) * gram
        a.flat[::len(a) + 1] += self.prior  # + prior * I, without building I
        b = weighted.T @ (self.strength - biases) * len(w) + self.prior * u0
        if self.prior > 0:  # a is then positive definite: LAPACK's Cholesky solve, without numpy's wrapper
            # checks (the request path: np.linalg.solve spent ~7 us of a fresh user's answer, dposv ~3)
            _, x, info = lapack.dposv(a, b)
            if info == 0:
                return x
        try:
            return np.linalg.solve(a, b)
        except LinAlgError:  # no prior and too few items to pin the vector down: least squares
            return np.linalg.lstsq(a, b, rcond=None)[0]


@dataclass(frozen=True)
class Blend:
    """Weights of the rankers added to the model's for one population (0, 0: LightFM's scores alone)."""

    cooc: float = 0.0
    popularity: float = 0.0

    def __post_init__(self) -> None:
        for name in ("cooc", "popularity"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"blend weight {name} must be a finite number >= 0, got {value!r}")

    @property
    def active(self) -> bool:
        """True when anything is added to the model's scores."""
        return self.cooc > 0 or self.popularity > 0


@dataclass(frozen=True)
class ServingPolicy:
    """What serves each population; the trainer picks it on a held-out slice and publishes it with the model.

    ``feature_users`` is "model" (LightFM through the user's features, blended by ``features``) or
    "popularity" (when the features lost to popularity on validation: never served then); so is
    ``fresh_users`` for users the model does not know who have interactions (fold-in and ``fresh``).
    """

    warm: Blend = field(default_factory=Blend)
    features: Blend = field(default_factory=Blend)
    fresh: Blend = field(default_factory=lambda: Blend(cooc=1.0))
    fold_in: FoldIn = field(default_factory=FoldIn)
    feature_users: str = "model"
    fresh_users: str = "model"

    def __post_init__(self) -> None:
        for name in ("feature_users", "fresh_users"):
            if getattr(self, name) not in FEATURE_USER_STRATEGIES:
                raise ValueError(f"{name} must be one of {FEATURE_USER_STRATEGIES}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """JSON-able form (model metadata, GET /model)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "ServingPolicy":
        """From :meth:`to_dict` output; the defaults when None."""
        if not data:
            return cls()
        data = dict(data)
        return cls(warm=Blend(**data.get("warm", {})), features=Blend(**data.get("features", {})),
                   fresh=Blend(**data.get("fresh", {})), fold_in=FoldIn(**data.get("fold_in", {})),
                   feature_users=data.get("feature_users", "model"), fresh_users=data.get("fresh_users", "model"))


class ItemNeighbors:
    """Item-item co-occurrence: cosine over the users who interacted positively with both, top ``k`` per item.

    ``matrix`` is a float32 CSR (n_items, n_items) with at most ``k`` entries per row and none on the
    diagonal; row i holds item i's neighbours.
    """

    def __init__(self, matrix: sp.csr_matrix):
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"the neighbour matrix must be square, got {matrix.shape}")
        self.matrix = matrix.astype(np.float32).tocsr()

    @classmethod
    def fit(cls, rows: np.ndarray, cols: np.ndarray, n_users: int, n_items: int, k: int = 50,
            max_per_user: int = 500) -> "ItemNeighbors":
        """From positive (user, item) index pairs; a user with more than ``max_per_user`` distinct items
        counts ``max_per_user`` of them, which bounds the cost at n_users * max_per_user^2."""
        pairs = np.unique(np.asarray(rows, dtype=np.int64) * n_items + np.asarray(cols, dtype=np.int64))
        users, items = pairs // n_items, pairs % n_items
        if max_per_user and len(users):
            rank = np.arange(len(users)) - np.searchsorted(users, users, side="left")
            keep = rank < max_per_user
            users, items = users[keep], items[keep]
        x = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
        counts = np.asarray(x.sum(axis=0)).ravel()
        co = (x.T @ x).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        co = co.tocoo()
        data = co.data / np.sqrt(counts[co.row] * counts[co.col])
        co = sp.csr_matrix((data.astype(np.float32), (co.row, co.col)), shape=(n_items, n_items))
        return cls(_top_per_row(co, k))

    def scores(self, positions: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Co-occurrence score of every item (n_items,) float64: sum of weights x cosine over ``positions``.

        One bincount over the rows' entries (a request's path: scipy's row slicing costs more than this).
        """
        m = self.matrix
        starts, ends = m.indptr[positions], m.indptr[positions + 1]
        lengths = ends - starts
        if not lengths.sum():
            return np.zeros(m.shape[1])
        take = np.repeat(ends - lengths.cumsum(), lengths) + np.arange(lengths.sum())
        return np.bincount(m.indices[take], weights=m.data[take] * np.repeat(weights, lengths), minlength=m.shape[1])

    def sparse_scores(self, positions: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The non-zero entries of :meth:`scores` as (item positions, values): a few hundred for a user,
        against every item for the dense form."""
        m = self.matrix
        starts, ends = m.indptr[positions], m.indptr[positions + 1]
        lengths = ends - starts
        if not lengths.sum():
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        take = np.repeat(ends - lengths.cumsum(), lengths) + np.arange(lengths.sum())
        values = m.data[take] * np.repeat(weights, lengths)
        if m.shape[1] <= DENSE_BELOW:  # a small catalogue: one dense bincount is cheaper than sorting
            dense = np.bincount(m.indices[take], weights=values, minlength=m.shape[1])
            items = np.flatnonzero(dense)
            return items, dense[items]
        items, inverse = np.unique(m.indices[take], return_inverse=True)
        return items, np.bincount(inverse, weights=values, minlength=len(items))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The CSR arrays, for the model artifact."""
        m = self.matrix
        return {"neighbors_data": m.data, "neighbors_indices": m.indices, "neighbors_indptr": m.indptr}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], n_items: int) -> "ItemNeighbors | None":
        """From :meth:`to_arrays` output (None when the artifact has none)."""
        if "neighbors_data" not in arrays:
            return None
        return cls(sp.csr_matrix((arrays["neighbors_data"], arrays["neighbors_indices"], arrays["neighbors_indptr"]),
                                 shape=(n_items, n_items)))


def _top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row (ties: any of them)."""
    matrix.sort_indices()
    indptr, data, indices = matrix.indptr, matrix.data, matrix.indices
    keep = np.ones(len(data), dtype=bool)
    long_rows = np.flatnonzero(np.diff(indptr) > k)
    for r in long_rows:
        lo, hi = indptr[r], indptr[r + 1]
        order = np.argpartition(-data[lo:hi], k)
        keep[lo + order[k:]] = False
    row_ids = np.repeat(np.arange(matrix.shape[0]), np.diff(indptr))
    return sp.csr_matrix((data[keep], (row_ids[keep], indices[keep])), shape=matrix.shape)


def standardise(scores: np.ndarray) -> np.ndarray:
    """(scores - mean) / std as a new array of the same float type; a constant array becomes 0. The scores
    must be finite (exclusions are applied after blending)."""
    n = len(scores)
    if n == 0:
        return scores.copy()
    mean = scores.sum(dtype=np.float64) / n
    out = scores - scores.dtype.type(mean)
    # the variance as a dot product of the centred values: one BLAS pass instead of np.std's float64
    # temporaries (at 100K candidates ~150 µs of a fresh user's ~900 µs answer)
    std = math.sqrt(max(float(np.dot(out, out)), 0.0) / n)
    if std > 0:
        out *= scores.dtype.type(1.0 / std)
    return out


def add_standardised_sparse(out: np.ndarray, items: np.ndarray, values: np.ndarray, n: int, weight: float) -> None:
    """out += weight * standardise(v), in place, for the length-``n`` vector v that is ``values`` at ``items``
    and 0 elsewhere: one scalar shift plus a sparse update instead of a pass over a dense v."""
    mean = values.sum() / n
    std = np.sqrt(max(0.0, (values ** 2).sum() / n - mean ** 2))
    if std == 0:
        return
    out -= out.dtype.type(weight * mean / std)
    out[items] += ((weight / std) * values).astype(out.dtype)
