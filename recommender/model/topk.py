"""Top-k selection: the one rule for serving, evaluation and batch answers (best score first, ties by id).

:func:`top_positions` finds the candidates (the n best plus everything tied with the n-th) without a full
sort; :func:`top_k` orders them. Scores of ``-inf`` mark excluded candidates and are never returned.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

_SAMPLE_SIZE = 4096  # sample used to find a threshold for the top-k
NEG_INF = float("-inf")


def top_positions(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` highest scores plus every position tied with the n-th highest (unordered).

    Exact. A full partition of a large array costs ~10 ns per element here, so a threshold is first
    taken from a strided sample; when at least ``n`` scores clear it, only those few are partitioned.
    """
    total = len(scores)
    if n >= total:
        return np.arange(total)
    step = max(4, total // _SAMPLE_SIZE)
    if total >= 16 * n and total >= 256:
        sample = scores[::step]
        rank = n // step + 2  # the rank-th best of the sample: about rank * step scores clear it
        # a few scores far above the rest (a blend's boosted items) make the sample's best too high: widen
        for _ in range(3):
            if rank >= len(sample):
                break
            threshold = np.partition(sample, len(sample) - rank)[len(sample) - rank]
            candidates = np.flatnonzero(scores >= threshold)
            if len(candidates) >= n:  # then the n-th best score is >= threshold: all ties are candidates
                values = scores[candidates]
                kth = np.partition(values, len(values) - n)[len(values) - n]
                return candidates[values >= kth]
            rank *= 8
    kth = np.partition(scores, total - n)[total - n]
    return np.flatnonzero(scores >= kth)


def top_k(scores: np.ndarray, k: int, id_of: Callable[[int], str] | None = None) -> list[int]:
    """Positions of the ``k`` best scores that are not ``-inf``, best first, ties broken by ``id_of(p)``.

    Without ``id_of`` ties go to the smaller position (callers whose positions are in id order, such as
    evaluation over sorted candidates, get the same rule). Fewer than ``k`` come back when fewer
    candidates are not ``-inf``.
    """
    if k <= 0 or len(scores) == 0:
        return []
    top = top_positions(scores, k)
    values = scores[top].tolist()
    if id_of is None:
        ranked = sorted((-v, p) for v, p in zip(values, top.tolist()) if v != NEG_INF)
    else:
        ranked = sorted((-v, id_of(p), p) for v, p in zip(values, top.tolist()) if v != NEG_INF)
    return [entry[-1] for entry in ranked[:k]]
