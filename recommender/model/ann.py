"""Approximate top-k by inner product over item rows ([item representation, item bias]), with faiss HNSW.

Exact scoring costs one matrix-vector product over every item: fine up to ~100K items, tens of
milliseconds at 1M (see docs/bench_scale.md). An HNSW graph answers the same question, approximately,
in a fraction of a millisecond. The index is built over the model's item matrix (representation with
the item bias as the last column) and queried with ``[user representation, 1]``, so a returned score
is the exact score minus the user's bias (a constant per user, which does not change the ranking).

faiss-cpu is used because it installs from a binary wheel (no compiler, no CPU-specific build), keeps
less memory than hnswlib for the same graph, takes the search breadth per call (thread-safe) and reads
and writes its own binary index format (no pickle). faiss is imported lazily: a model without an
index never needs it.

Recall depends on the data as much as on the parameters: rows that are near-duplicates (items that
share their features and have few interactions of their own) crowd the top of the ranking and need a
wider search (``ef_search``) for the same recall; measure it on the real model (docs/bench_scale.md).
A single query runs on the calling thread (faiss opens no OpenMP region for one query); the build uses
OpenMP threads, so build in the trainer, not in a process that forks afterwards.

    ann = AnnIndex.build(model.index.item_matrix, threads=2)
    rows, scores = ann.query(np.append(user_repr, 1), k=10)   # scores + user_bias == exact scores
    ann.save(path); AnnIndex.load(path, dim=model.no_components + 1)
    ApproximateIndex(model.index, ann).recommend("u1", 10)    # a ScoringIndex answer, known items from ann
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from .index import ItemFeatures, PreparedItems, Ranking, ScoringIndex, check_n, excluded_ids

__all__ = ["AnnIndex", "ApproximateIndex", "exact_thresholds", "serving_recall", "tune_ef_search"]


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the approximate index needs faiss: pip install faiss-cpu") from exc
    return faiss


class AnnIndex:
    """An HNSW graph over the rows of a float32 matrix, searched by inner product (faiss IndexHNSWFlat).

    ``n`` rows of ``dim`` columns. The rows are stored in the index (flat float32), so returned
    scores are exact inner products of the returned rows; only which rows are returned is approximate.
    Queries are thread-safe (the search breadth is passed per call) and run on the calling thread.
    """

    def __init__(self, index, ef_search: int = 64):
        faiss = _faiss()
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("the index does not search by inner product")
        self._index = index
        self.ef_search = _positive("ef_search", ef_search)
        self.n = int(index.ntotal)
        self.dim = int(index.d)

    def __repr__(self) -> str:
        return f"AnnIndex(n={self.n}, dim={self.dim}, ef_search={self.ef_search})"

    @classmethod
    def build(cls, matrix: np.ndarray, *, m: int = 16, ef_construction: int = 100, ef_search: int = 64,
              threads: int = 1) -> "AnnIndex":
        """Build over the rows of ``matrix`` (n, d); ``threads`` OpenMP threads for the build only.

        Build time grows with n and ``ef_construction`` (about a minute for 1M x 33 on 2 idle cores at the
        defaults); ``m`` is the number of graph links per row (memory ~ n * (4 d + 8 m + 12) bytes).
        """
        faiss = _faiss()
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] < 1:
            raise ValueError(f"matrix must be 2-D (n, d) with d >= 1, got shape {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise ValueError("matrix has NaN or infinite values")
        index = faiss.IndexHNSWFlat(matrix.shape[1], _positive("m", m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = _positive("ef_construction", ef_construction)
        index.hnsw.efSearch = _positive("ef_search", ef_search)
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(_positive("threads", threads))
        try:
            if len(matrix):
                index.add(matrix)
        finally:
            faiss.omp_set_num_threads(previous)  # queries stay on the calling thread
        return cls(index, ef_search)

    def query(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The (approximately) best ``k`` rows by inner product with ``vector``: (rows int64, scores float32).

        Best first. Fewer than ``k`` come back when ``k`` exceeds ``n``. The search breadth is
        ``max(ef_search, k)``, so asking for more rows also searches wider.
        """
        faiss = _faiss()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.dim:
            raise ValueError(f"query has {query.shape[1]} values, the index has dim {self.dim}")
        k = min(int(k), self.n)
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        scores, rows = self._index.search(query, k, params=params)
        rows, scores = rows[0], scores[0]
        found = rows >= 0  # faiss pads with -1 when the graph yields fewer than k rows
        if not found.all():
            rows, scores = rows[found], scores[found]
        return rows.astype(np.int64, copy=False), scores.astype(np.float32, copy=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write the index in faiss's own binary format (no pickle)."""
        _faiss().write_index(self._index, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, dim: int, ef_search: int = 64) -> "AnnIndex":
        """Read an index written by :meth:`save`; ``dim`` is checked against the file.

        Raises
        ------
        ValueError
            The file is not an inner-product HNSW index of ``dim`` columns, or cannot be read.
        """
        faiss = _faiss()
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"no index file at {path}")
        try:
            index = faiss.read_index(path)
        except RuntimeError as exc:  # faiss raises RuntimeError on a damaged or foreign file
            raise ValueError(f"cannot read the index at {path}: {str(exc).strip().splitlines()[0]}") from exc
        if not isinstance(index, faiss.IndexHNSWFlat):
            raise ValueError(f"{path} holds a {type(index).__name__}, not an HNSW flat index")
        if index.d != dim:
            raise ValueError(f"{path} has dim {index.d}, expected {dim}")
        return cls(index, ef_search)


class ApproximateIndex:
    """A :class:`ScoringIndex` whose known-item candidates come from an :class:`AnnIndex`.

    For a user with a query row and no ``item_ids`` restriction, the ANN index proposes its best
    ``n + len(exclude) + slack`` known items; those, the known items whose features changed since
    training (the index holds their old rows) and every new item are then scored exactly by the scoring
    index, filtered and cut as usual. Users served by popularity, restricted candidate lists, and answers
    that come out shorter than ``n`` after the filters go to the exact path.
    """

    def __init__(self, index: ScoringIndex, ann: AnnIndex, slack: int = 10):
        if ann.n != index.n_items:
            raise ValueError(f"the ANN index covers {ann.n} items, the scoring index has {index.n_items}")
        self.index = index
        self.ann = ann
        self.slack = slack

    def recommend(self, user_id: object, n: int = 10, *, user_features: Mapping[str, float] | None = None,
                  item_features: ItemFeatures | PreparedItems | None = None,
                  item_ids: Iterable[object] | None = None, exclude: Iterable[object] = (),
                  use_baseline: bool = True, filters: Sequence[Sequence[str]] = (),
                  interactions: Mapping[str, float] | None = None,
                  explore: tuple[float, int] | None = None) -> Ranking:
        """Like :meth:`ScoringIndex.recommend`; ``Ranking.approximate`` says whether the ANN index answered.

        Feature filters go to the exact path: the index knows nothing of features, and a filter that
        keeps few items is scored exactly at little cost anyway. So do co-occurrence fold-ins (their
        scores are not inner products).
        """
        if item_ids is not None or filters or check_n(n) == 0:
            return self.index.recommend(user_id, n, user_features=user_features, item_features=item_features,
                                        item_ids=item_ids, exclude=exclude, use_baseline=use_baseline,
                                        filters=filters, interactions=interactions, explore=explore)
        index = self.index
        prepared = index.prepared(item_features)
        user = index._user(user_id, user_features, use_baseline, prepared, interactions)
        excluded = excluded_ids(exclude)
        if user.query is not None and user.blend is None:
            rows, _ = self.ann.query(user.query, n + len(excluded) + self.slack)
            positions = np.unique(np.concatenate([rows, prepared.override_pos,
                                                  index.n_items + np.arange(len(prepared.extra_ids))]))
            ranking = index.rank(user, prepared, n, excluded, positions, prepared.unscorable, approximate=True)
            if len(ranking.items) >= n:
                if explore is not None and explore[0] > 0:  # random slots draw from the whole catalogue
                    return index.rank(user, prepared, n, excluded, None, prepared.unscorable, explore=explore)
                return ranking
        return index.rank(user, prepared, n, excluded, None, prepared.unscorable, explore=explore)


def exact_thresholds(matrix: np.ndarray, queries: np.ndarray, n: int) -> np.ndarray:
    """The n-th best exact score of each query over the rows of ``matrix`` (one product per query)."""
    n = min(n, len(matrix))
    out = np.empty(len(queries), dtype=np.float32)
    for i, query in enumerate(np.asarray(queries, dtype=np.float32)):
        scores = matrix @ query
        out[i] = np.partition(scores, len(scores) - n)[len(scores) - n]
    return out


def serving_recall(index: AnnIndex, queries: np.ndarray, thresholds: np.ndarray, n: int = 10,
                   slack: int = 10) -> float:
    """Recall@n of the index as ``recommend(approximate=True)`` uses it, mean over ``queries``.

    The index returns its best ``n + slack`` rows with exact scores; their top ``n`` is compared with the
    exact top ``n`` (``thresholds`` from :func:`exact_thresholds`): a returned row counts when its score
    reaches the exact n-th best score, so ties there never count as misses.
    """
    hits = 0
    n_eff = min(n, index.n)
    for query, kth in zip(np.asarray(queries, dtype=np.float32), thresholds):
        _, scores = index.query(query, n_eff + slack)
        top = np.sort(scores)[::-1][:n_eff]
        hits += int(np.count_nonzero(top >= kth - 1e-5 * max(1.0, abs(float(kth)))))
    return hits / (n_eff * len(queries)) if len(queries) and n_eff else 1.0


def tune_ef_search(index: AnnIndex, matrix: np.ndarray, queries: np.ndarray, *, target: float, start: int,
                   limit: int = 2048, n: int = 10,
                   min_gain: float = 0.005) -> tuple[int, float, list[tuple[int, float]]]:
    """The smallest search breadth in start, 2 start, 4 start, ... <= ``limit`` whose serving recall@n
    reaches ``target``: (ef_search, its recall, every (ef, recall) tried).

    When the target is out of reach it stops at ``limit``, or earlier where doubling the breadth gained
    less than ``min_gain`` recall, and returns the narrower of those two breadths (same recall, half the
    query time). Leaves ``index.ef_search`` at the returned value. Costs one exact scoring per query, once.
    """
    thresholds = exact_thresholds(matrix, queries, n)
    ef, curve = min(_positive("start", start), limit), []
    while True:
        index.ef_search = ef
        recall = serving_recall(index, queries, thresholds, n)
        curve.append((ef, recall))
        if recall >= target or ef >= limit:
            return ef, recall, curve
        if len(curve) > 1 and recall - curve[-2][1] < min_gain:  # a plateau below the target
            index.ef_search = curve[-2][0]
            return curve[-2][0], curve[-2][1], curve
        ef = min(ef * 2, limit)


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
