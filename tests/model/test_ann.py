"""The approximate top-k index (recommender.ann) against exact inner-product top-k."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss", reason="faiss-cpu is not installed (the approximate index is optional)")

from recommender.model.ann import AnnIndex  # noqa: E402

N, DIM, K = 20_000, 33, 10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    # shaped like an item matrix: representation columns plus a bias column
    matrix = rng.standard_normal((N, DIM)).astype(np.float32) * 0.3
    matrix[:, -1] = rng.normal(0.0, 0.5, N)
    queries = np.hstack([rng.standard_normal((200, DIM - 1)).astype(np.float32),
                         np.ones((200, 1), np.float32)])  # [user representation, 1]
    return matrix, queries


@pytest.fixture(scope="module")
def index(data):
    return AnnIndex.build(data[0], threads=2)


def exact_top(matrix, query, k):
    scores = matrix @ query
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def mean_recall(index, matrix, queries):
    recalls = []
    for q in queries:
        rows, _ = index.query(q, K)
        assert len(rows) == K and rows.dtype == np.int64
        recalls.append(len(set(rows.tolist()) & set(exact_top(matrix, q, K).tolist())) / K)
    return float(np.mean(recalls))


def test_recall_against_exact(data, index, tmp_path):
    # i.i.d. Gaussian rows in 33 dimensions are the hard case for an inner-product graph: at the
    # default breadth (ef_search=64) recall@10 is ~0.94 here (hnswlib: ~0.92); ef_search=128 gives ~0.99
    matrix, queries = data
    assert (index.n, index.dim) == (N, DIM)
    assert mean_recall(index, matrix, queries) >= 0.90
    path = tmp_path / "items.faiss"
    index.save(path)
    wider = AnnIndex.load(path, dim=DIM, ef_search=128)
    assert mean_recall(wider, matrix, queries) >= 0.95


def test_scores_are_exact_inner_products_best_first(data, index):
    matrix, queries = data
    for q in queries[:10]:
        rows, scores = index.query(q, K)
        assert scores.dtype == np.float32
        np.testing.assert_allclose(scores, matrix[rows] @ q, atol=1e-4)
        assert np.all(np.diff(scores) <= 0)


def test_save_load_round_trip(data, index, tmp_path):
    _, queries = data
    path = tmp_path / "items.faiss"
    index.save(path)
    loaded = AnnIndex.load(path, dim=DIM)
    assert (loaded.n, loaded.dim) == (index.n, index.dim)
    for q in queries[:10]:
        a_rows, a_scores = index.query(q, K)
        b_rows, b_scores = loaded.query(q, K)
        np.testing.assert_array_equal(a_rows, b_rows)
        np.testing.assert_array_equal(a_scores, b_scores)
    with pytest.raises(ValueError, match="dim"):
        AnnIndex.load(path, dim=DIM + 1)
    damaged = tmp_path / "damaged.faiss"
    damaged.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError):
        AnnIndex.load(damaged, dim=DIM)


def test_k_larger_than_n_and_edge_cases():
    rng = np.random.default_rng(3)
    small = rng.standard_normal((7, 5)).astype(np.float32)
    index = AnnIndex.build(small)
    q = rng.standard_normal(5).astype(np.float32)
    rows, scores = index.query(q, 50)
    assert sorted(rows.tolist()) == list(range(7))
    np.testing.assert_array_equal(rows, exact_top(small, q, 7))
    np.testing.assert_allclose(scores, small[rows] @ q, atol=1e-5)
    assert index.query(q, 0)[0].shape == (0,)
    with pytest.raises(ValueError):
        index.query(q[:4], 3)
    with pytest.raises(ValueError):
        index.query(q, -1)
    empty = AnnIndex.build(np.zeros((0, 5), np.float32))
    assert empty.n == 0 and empty.query(q, 10)[0].shape == (0,)
    with pytest.raises(ValueError):
        AnnIndex.build(np.full((3, 5), np.nan, np.float32))


def reference_serving_recall(index, matrix, queries, n=K, slack=10):
    """Recall@n the way recommend(approximate=True) uses the index, computed with plain sorting:
    the index's best n + slack rows, re-ranked by exact score; a hit is a row whose exact score is
    at least the exact n-th best (ties are not misses)."""
    hits = 0
    for q in queries:
        scores = matrix @ q
        kth = np.sort(scores)[-n]
        rows, _ = index.query(q, n + slack)
        mine = sorted(rows.tolist(), key=lambda r: -scores[r])[:n]
        hits += sum(scores[r] >= kth - 1e-5 for r in mine)
    return hits / (n * len(queries))


def test_tuning_widens_the_search_until_the_measured_recall_reaches_the_target(data):
    from recommender.model.ann import tune_ef_search

    matrix, queries = data
    index = AnnIndex.build(matrix, m=8, ef_construction=40)  # a sparse graph: recall ~0.46 at ef 20, ~0.9 at 160
    ef, recall, curve = tune_ef_search(index, matrix, queries[:100], target=0.85, start=20, limit=640)
    assert index.ef_search == ef and curve[-1] == (ef, recall)
    assert [e for e, _ in curve] == [20 * 2 ** i for i in range(len(curve))]  # doubling from the start
    assert len(curve) >= 3 and curve[0][1] < 0.85 <= recall  # it had to widen, and reached the target
    assert all(r < 0.85 for _, r in curve[:-1])  # the first breadth that reaches it, not a wider one
    index.ef_search = ef
    assert recall == pytest.approx(reference_serving_recall(index, matrix, queries[:100]), abs=1e-9)
    index.ef_search = curve[0][0]
    assert curve[0][1] == pytest.approx(reference_serving_recall(index, matrix, queries[:100]), abs=1e-9)


def test_tuning_stops_at_the_limit_when_the_target_is_out_of_reach(data):
    from recommender.model.ann import tune_ef_search

    matrix, queries = data
    index = AnnIndex.build(matrix, m=4, ef_construction=16)
    ef, recall, curve = tune_ef_search(index, matrix, queries[:50], target=1.0, start=30, limit=100)
    assert [e for e, _ in curve] == [30, 60, 100] and ef == 100 and index.ef_search == 100
    assert recall < 1.0


def test_tuning_stops_on_a_plateau_below_the_target_at_the_narrower_breadth(data):
    from recommender.model.ann import tune_ef_search

    matrix, queries = data
    index = AnnIndex.build(matrix, ef_search=64)  # recall ~0.94 at 64, ~0.99 at 128, then flat
    ef, recall, curve = tune_ef_search(index, matrix, queries[:100], target=1.0, start=64, limit=4096,
                                       min_gain=0.02)
    gains = [b[1] - a[1] for a, b in zip(curve, curve[1:])]
    assert all(g >= 0.02 for g in gains[:-1]) and gains[-1] < 0.02  # it stopped at the first small gain
    assert curve[-1][0] < 4096 and (ef, recall) == curve[-2] and index.ef_search == ef
    assert recall < 1.0
