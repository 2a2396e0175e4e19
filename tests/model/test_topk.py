"""The one top-k rule (recommender.model.topk): exact top n with boundary ties, best first, ties by id."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.model.topk import top_k, top_positions


def test_top_k_order_and_ties_go_to_the_earlier_position():
    scores = np.array([1.0, 2.0, 2.0, 0.0, 2.0])
    assert top_k(scores, 1) == [1]
    assert top_k(scores, 2) == [1, 2]
    assert top_k(scores, 4) == [1, 2, 4, 0]
    assert top_k(scores, 10) == [1, 2, 4, 0, 3]
    assert top_k(scores, 0) == []


@pytest.mark.parametrize("total", [1, 7, 300, 5_000, 120_000])
def test_top_positions_is_the_exact_top_n_with_boundary_ties(total):
    rng = np.random.default_rng(total)
    for trial in range(20):
        # few distinct values (heavy ties), continuous values, sorted runs and excluded (-inf) entries
        kind = trial % 4
        if kind == 0:
            scores = rng.integers(0, 5, total).astype(np.float32)
        elif kind == 1:
            scores = rng.standard_normal(total).astype(np.float32)
        elif kind == 2:
            scores = np.sort(rng.standard_normal(total)).astype(np.float32)[:: 1 if trial % 8 < 4 else -1].copy()
        else:
            scores = rng.standard_normal(total).astype(np.float32)
            scores[rng.random(total) < 0.9] = -np.inf
        n = int(rng.integers(1, 60))
        got = set(top_positions(scores, n).tolist())
        if n >= total:
            assert got == set(range(total))
            continue
        nth = np.sort(scores)[::-1][n - 1]  # the n-th highest value: everything >= it, and nothing else
        assert got == set(np.flatnonzero(scores >= nth).tolist())


def test_top_k_breaks_ties_by_id_and_never_returns_excluded_candidates():
    scores = np.array([1.0, 2.0, 2.0, -np.inf, 2.0, 0.5])
    ids = ["e", "c", "a", "z", "b", "d"]
    assert top_k(scores, 3, ids.__getitem__) == [2, 4, 1]  # the three 2.0s ordered a, b, c
    assert top_k(scores, 10, ids.__getitem__) == [2, 4, 1, 0, 5]  # -inf (excluded) is left out
