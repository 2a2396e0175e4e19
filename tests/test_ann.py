"""The approximate top-k index (recommender.ann) against exact inner-product top-k."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss", reason="faiss-cpu is not installed (the approximate index is optional)")

from recommender.ann import AnnIndex  # noqa: E402

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
