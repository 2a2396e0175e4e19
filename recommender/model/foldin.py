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
z(log popularity). The item-item ranker (:class:`ItemNeighbors`, the policy's ``item_item``) is either
``cosine`` co-occurrence (the cosine over the users who interacted with two items, the top 50 neighbours per
item) or ``ridge``: per item, a ridge regression of its column of the user-item matrix on the columns of its
``RIDGE_K`` most co-occurring items, the linear item-item model EASE (Steck, 2019) restricted to each item's
neighbourhood, so that it scales with items x RIDGE_K^3 in time and items x RIDGE_K in memory instead of
items^3 and items^2; both from the training interactions. "The user's items" are its training items (known
users) plus what it did since. A blend's scores are not LightFM's: their own reference test checks them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np
import scipy.sparse as sp
from scipy.linalg import LinAlgError, lapack

try:  # scipy's compiled CSC matrix-vector kernel (private; stable for a decade): see weighted_row_sum
    from scipy.sparse._sparsetools import csc_matvec as _csc_matvec
except ImportError:  # pragma: no cover - a scipy that moved it: the numpy fallback serves
    _csc_matvec = None

FOLD_IN_METHODS = ("off", "mean", "ls")
ITEM_ITEM_KINDS = ("cosine", "ridge")
RIDGE_K = 200  # predictors per item of the ridge item-item model (100 above RIDGE_K_ITEMS items: memory)
RIDGE_K_ITEMS = 20_000
RIDGE_DENSE_ITEMS = 4096  # up to this many items the co-occurrence counts are a dense array while building
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
        if self.negatives == 0:  # no prior and no negatives: rank <= the items given, the minimum-norm solution
            return np.linalg.lstsq(a, b, rcond=None)[0]
        try:
            return np.linalg.solve(a, b)
        except LinAlgError:  # too few items to pin the vector down: least squares
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
    ``item_item`` is the item-item ranker the ``cooc`` weights blend in ("cosine" or "ridge", see the
    module); ``ridge_l2`` its L2 penalty as a multiple of the mean number of users per item.
    """

    warm: Blend = field(default_factory=Blend)
    features: Blend = field(default_factory=Blend)
    fresh: Blend = field(default_factory=lambda: Blend(cooc=1.0))
    fold_in: FoldIn = field(default_factory=FoldIn)
    feature_users: str = "model"
    fresh_users: str = "model"
    item_item: str = "cosine"
    ridge_l2: float = 8.0

    def __post_init__(self) -> None:
        for name in ("feature_users", "fresh_users"):
            if getattr(self, name) not in FEATURE_USER_STRATEGIES:
                raise ValueError(f"{name} must be one of {FEATURE_USER_STRATEGIES}, got {getattr(self, name)!r}")
        if self.item_item not in ITEM_ITEM_KINDS:
            raise ValueError(f"item_item must be one of {ITEM_ITEM_KINDS}, got {self.item_item!r}")
        if not (math.isfinite(self.ridge_l2) and self.ridge_l2 > 0):
            raise ValueError(f"ridge_l2 must be a finite number > 0, got {self.ridge_l2!r}")

    @property
    def item_item_spec(self) -> tuple:
        """What identifies the item-item ranker this policy needs: ("cosine",) or ("ridge", ridge_l2)."""
        return ("cosine",) if self.item_item == "cosine" else ("ridge", float(self.ridge_l2))

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
                   feature_users=data.get("feature_users", "model"), fresh_users=data.get("fresh_users", "model"),
                   item_item=data.get("item_item", "cosine"), ridge_l2=float(data.get("ridge_l2", 8.0)))


class ItemNeighbors:
    """An item-item ranker: the score of item j for a user is sum over the user's items i of w_i * M[i, j].

    ``matrix`` M is a float32 CSR (n_items, n_items) with none on the diagonal. ``spec`` says what it is
    (ServingPolicy.item_item_spec): ("cosine",) from :meth:`fit`, cosine co-occurrence, top ``k`` per row,
    symmetric before the cut; ("ridge", l2) from :meth:`ridge`, where column j holds the ridge weights of
    j's most co-occurring items.
    """

    def __init__(self, matrix: sp.csr_matrix, spec: tuple = ("cosine",)):
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"the neighbour matrix must be square, got {matrix.shape}")
        self.matrix = matrix.astype(np.float32).tocsr()
        self.spec = tuple(spec)

    @classmethod
    def ridge(cls, user_items: sp.csr_matrix, l2: float = 8.0, k: int | None = None,
              max_per_user: int = 500) -> "ItemNeighbors":
        """The ridge item-item model from a binary (n_users, n_items) matrix X of positive interactions.

        For every item j with co-occurring items: N(j) = its ``k`` (default RIDGE_K, or 100 above RIDGE_K_ITEMS
        items) most co-occurring items, and M[N(j), j] = (G[N,N] + lambda I)^-1 G[N, j] with G = X'X and
        lambda = ``l2`` x the mean of G's non-zero diagonal (users per item): what EASE's closed form
        solves over all items at once (B = I - P diag(1/diag P), P = (G + lambda I)^-1, O(n_items^3)),
        restricted to a neighbourhood per item (O(n_items k^3), k per column). A user with more than
        ``max_per_user`` items counts that many of them (as in :meth:`fit`). Each row then keeps its ``k``
        weights of largest magnitude (a request's cost: k per item of the user's history).
        """
        n_users, n = user_items.shape
        k = k or (RIDGE_K if n <= RIDGE_K_ITEMS else RIDGE_K // 2)
        coo = user_items.tocoo()
        x = _capped_binary(coo.row, coo.col, n_users, n, max_per_user, np.float64)  # a bot would make X'X dense
        g = (x.T @ x).tocsr()
        diag = g.diagonal()
        lam = float(l2) * float(diag[diag > 0].mean()) if (diag > 0).any() else float(l2)
        candidates = g.copy()
        candidates.setdiag(0)
        candidates.eliminate_zeros()
        top = _top_per_row(candidates.astype(np.float64), k)
        dense = g.toarray() if n <= RIDGE_DENSE_ITEMS else None
        if dense is None:
            g.sort_indices()  # _block searches each row's sorted columns
        rows, cols, vals = [], [], []
        for j in range(n):
            nb = np.sort(top.indices[top.indptr[j]:top.indptr[j + 1]])
            if len(nb):
                if dense is not None:
                    a, rhs = dense[np.ix_(nb, nb)], dense[nb, j]
                else:
                    a, rhs = _block(g, nb, j)
                a.flat[::len(nb) + 1] += lam
                _, b, info = lapack.dposv(a, rhs)
                if info != 0:  # not positive definite (cannot happen with lambda > 0 but numbers): solve plainly
                    b = np.linalg.lstsq(a, rhs, rcond=None)[0]
                rows.append(nb)
                cols.append(np.full(len(nb), j))
                vals.append(b)
        if not rows:
            return cls(sp.csr_matrix((n, n), dtype=np.float32), ("ridge", float(l2)))
        matrix = sp.csr_matrix((np.concatenate(vals).astype(np.float32),
                                (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        # a popular item predicts most of the catalogue: keep each row's k weights of largest magnitude, so
        # that a request sums at most k per item of the user's history (weak world, 2,000 items: warm
        # precision@10 0.3882 instead of 0.3883, rank() 125 us instead of 325)
        return cls(_top_per_row(matrix, k, by_magnitude=True), ("ridge", float(l2)))

    @classmethod
    def for_policy(cls, policy: "ServingPolicy", user_items: sp.csr_matrix) -> "ItemNeighbors":
        """The item-item ranker ``policy`` asks for, built from the binary user-item matrix."""
        if policy.item_item == "ridge":
            return cls.ridge(user_items, policy.ridge_l2)
        coo = user_items.tocoo()
        return cls.fit(coo.row, coo.col, user_items.shape[0], user_items.shape[1])

    @classmethod
    def fit(cls, rows: np.ndarray, cols: np.ndarray, n_users: int, n_items: int, k: int = 50,
            max_per_user: int = 500) -> "ItemNeighbors":
        """From positive (user, item) index pairs; a user with more than ``max_per_user`` distinct items
        counts ``max_per_user`` of them, which bounds the cost at n_users * max_per_user^2."""
        x = _capped_binary(rows, cols, n_users, n_items, max_per_user, np.float32)
        counts = np.asarray(x.sum(axis=0)).ravel()
        co = (x.T @ x).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        co = co.tocoo()
        data = co.data / np.sqrt(counts[co.row] * counts[co.col])
        co = sp.csr_matrix((data.astype(np.float32), (co.row, co.col)), shape=(n_items, n_items))
        return cls(_top_per_row(co, k))

    def scores(self, positions: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Item-item score of every item, (n_items,) float32: sum of ``weights`` x M[i, :] over the rows
        ``positions`` (repeats add up). A request's path: see :func:`weighted_row_sum`."""
        return weighted_row_sum(self.matrix, positions, weights)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The CSR arrays, for the model artifact."""
        m = self.matrix
        return {"neighbors_data": m.data, "neighbors_indices": m.indices, "neighbors_indptr": m.indptr}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], n_items: int, spec: tuple = ("cosine",)) -> "ItemNeighbors | None":
        """From :meth:`to_arrays` output (None when the artifact has none); ``spec`` from the model's policy."""
        if "neighbors_data" not in arrays:
            return None
        return cls(sp.csr_matrix((arrays["neighbors_data"], arrays["neighbors_indices"], arrays["neighbors_indptr"]),
                                 shape=(n_items, n_items)), spec)


def weighted_row_sum(m: sp.csr_matrix, positions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum over k of weights[k] * m[positions[k], :] as a dense float32 (n_cols,) array; repeats add up.

    A request's path (a warm user's history is a hundred rows or more of a few hundred entries each), so
    it is one pass in compiled code: scipy's CSC matrix-vector kernel run over the selected rows as if
    they were the columns of a CSC matrix, taken in decreasing order with an empty column between two
    (each gap's start, the end of a row, is at or after its end, the start of the next lower row, so the
    kernel skips it). ~60 us instead of ~250 us for the eight numpy passes of :func:`_weighted_row_sum_numpy`
    (2,000 items, 115 rows); that remains the fallback should scipy's private kernel move.
    """
    positions = np.asarray(positions, dtype=np.int64)
    weights = np.asarray(weights)
    if weights.shape != positions.shape:
        raise ValueError(f"one weight per position: {weights.shape} weights for {positions.shape} positions")
    n_cols = m.shape[1]
    out = np.zeros(n_cols, dtype=np.float32)
    if not len(positions):
        return out
    order = np.argsort(positions, kind="stable")[::-1]
    rows = positions[order]
    if rows[-1] < 0 or rows[0] >= m.shape[0]:
        raise IndexError(f"row positions must be in [0, {m.shape[0]}), got {rows[-1]}..{rows[0]}")
    if _csc_matvec is None or m.indptr.dtype != m.indices.dtype or m.data.dtype != np.float32:
        return _weighted_row_sum_numpy(m, positions, weights)
    bounds = np.empty(2 * len(rows), dtype=m.indptr.dtype)
    bounds[0::2] = m.indptr[rows]
    bounds[1::2] = m.indptr[rows + 1]
    x = np.zeros(2 * len(rows) - 1, dtype=np.float32)
    x[0::2] = weights[order]
    _csc_matvec(n_cols, len(x), bounds, m.indices, m.data, x, out)
    return out


def _kernel_agrees() -> bool:
    """The private kernel, tried once at import on a small matrix against the numpy path: a scipy that
    changed its signature or meaning leaves requests on the fallback instead of failing or going wrong."""
    m = sp.csr_matrix(np.array([[0, 1, 2], [3, 0, 0], [0, 0, 0], [4, 5, 6]], dtype=np.float32))
    positions, weights = np.array([3, 0, 3, 2, 1]), np.array([1.0, 2.0, 0.5, 3.0, 4.0])
    try:
        return np.allclose(weighted_row_sum(m, positions, weights), _weighted_row_sum_numpy(m, positions, weights))
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        return False


def _weighted_row_sum_numpy(m: sp.csr_matrix, positions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`weighted_row_sum` in numpy passes (gather the rows' entries, one weighted bincount)."""
    positions = np.asarray(positions, dtype=np.int64)
    starts, ends = m.indptr[positions], m.indptr[positions + 1]
    lengths = ends - starts
    take = np.repeat(ends - lengths.cumsum(), lengths) + np.arange(int(lengths.sum()))
    if not len(take):
        return np.zeros(m.shape[1], dtype=np.float32)
    values = m.data[take] * np.repeat(np.asarray(weights, dtype=np.float64), lengths)
    return np.bincount(m.indices[take], weights=values, minlength=m.shape[1]).astype(np.float32)


def _capped_binary(rows: np.ndarray, cols: np.ndarray, n_users: int, n_items: int, max_per_user: int,
                   dtype) -> sp.csr_matrix:
    """The binary (n_users, n_items) CSR of (user, item) index pairs, repeats once; a user with more than
    ``max_per_user`` distinct items (0: no cap) keeps the first ``max_per_user`` by item index, which bounds
    X'X at n_users * max_per_user^2 entries (one heavy user, a bot, would otherwise make it dense)."""
    pairs = np.unique(np.asarray(rows, dtype=np.int64) * n_items + np.asarray(cols, dtype=np.int64))
    users, items = pairs // n_items, pairs % n_items
    if max_per_user and len(users):
        rank = np.arange(len(users)) - np.searchsorted(users, users, side="left")
        keep = rank < max_per_user
        users, items = users[keep], items[keep]
    return sp.csr_matrix((np.ones(len(users), dtype=dtype), (users, items)), shape=(n_users, n_items))


def _block(g: sp.csr_matrix, nb: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """(G[nb][:, nb], G[nb, j]) as dense float64 from a CSR with sorted indices, ``nb`` sorted.

    One binary search of the wanted columns per row, on the row's own slice: scipy's fancy indexing copies
    whole rows, and the rows of popular items are most of the catalogue long (7 ms per item at 20,000 items).
    """
    wanted = np.append(nb, j)
    block = np.zeros((len(nb), len(wanted)))
    indptr, indices, data = g.indptr, g.indices, g.data
    for r, a in enumerate(nb.tolist()):
        start, end = indptr[a], indptr[a + 1]
        if start == end:
            continue
        row = indices[start:end]
        pos = np.searchsorted(row, wanted)
        np.minimum(pos, end - start - 1, out=pos)
        hit = row[pos] == wanted
        block[r, hit] = data[start:end][pos[hit]]
    return block[:, :-1].copy(), block[:, -1].copy()


def _top_per_row(matrix: sp.csr_matrix, k: int, by_magnitude: bool = False) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row (of largest absolute value with ``by_magnitude``; ties:
    any of them)."""
    matrix.sort_indices()
    indptr, data, indices = matrix.indptr, matrix.data, matrix.indices
    keep = np.ones(len(data), dtype=bool)
    long_rows = np.flatnonzero(np.diff(indptr) > k)
    for r in long_rows:
        lo, hi = indptr[r], indptr[r + 1]
        order = np.argpartition(-np.abs(data[lo:hi]) if by_magnitude else -data[lo:hi], k)
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


if _csc_matvec is not None and not _kernel_agrees():  # pragma: no cover - only with a scipy that changed it
    _csc_matvec = None
