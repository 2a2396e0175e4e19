"""Batch recommendations: the top-N of many known users at matrix-product speed, same answers as one by one.

Users are scored in blocks: one product of the block's query rows with the item matrix (new catalogue
items included), the model's serving policy for warm users applied row by row (vectorised), the same
exclusions as GET /recommend (seen and negative items from the store, or the training items without a
store; items outside the catalogue), and the one top-k rule (ties by item id) per row. Blocks are sized so
that a block's score matrix stays under ``max_block_cells`` floats: memory does not grow with the number
of users. Known users are scored with their training-time representation (their features in Redis are not
read: a batch is a snapshot of the model), which is what ``LFMRecommender.recommend(user)`` gives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from .model.foldin import standardise
from .model.topk import top_k
from .serving import ModelSnapshot

MAX_BLOCK_CELLS = 1 << 25  # scores per block (128 MiB of float32)


@dataclass
class BatchBlock:
    """One block of answers: users and, for each, its (item_id, score) list, best first."""

    users: list[str]
    items: list[list[tuple[str, float]]]


def batch_recommend(snap: ModelSnapshot, n: int = 10, users: Iterable[str] | None = None, *, store=None,
                    exclude_seen: bool = True, max_block_cells: int = MAX_BLOCK_CELLS,
                    skipped: list | None = None) -> Iterator[BatchBlock]:
    """Yield the top ``n`` of every known user (``users`` None) or of the listed ones, block by block.

    Listed users the model does not know are appended to ``skipped`` (when given) and left out: a batch
    answers from the model alone; unknown users are served one by one by the service.

    Raises
    ------
    ValueError
        ``n`` < 1.
    StoreUnavailableError
        ``store`` given and Redis did not answer.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    model = snap.model
    index, prepared = model.index, snap.items
    id_index = model.user_space.id_index
    if users is None:
        rows = np.arange(model.n_users)
    else:
        wanted = list(dict.fromkeys(users))
        known = [id_index.get(u) for u in wanted]
        if skipped is not None:
            skipped.extend(u for u, r in zip(wanted, known) if r is None)
        rows = np.asarray([r for r in known if r is not None], dtype=np.int64)
    n_candidates = prepared.n_candidates
    block = max(1, min(4096, max_block_cells // max(1, n_candidates)))
    user_ids = model.user_space.ids
    buffer = np.empty((min(block, len(rows)), n_candidates), dtype=np.float32) if len(rows) else None
    for start in range(0, len(rows), block):
        chunk = rows[start:start + block]
        names = [user_ids[r] for r in chunk]
        scores, bias = block_scores(snap, chunk, with_bias=False, out=buffer)
        excluded = _exclusions(snap, chunk, names, store, exclude_seen)
        answers = []
        for i, drop in enumerate(excluded):
            row = scores[i]
            if drop:
                positions = [p for p in map(index.item_space.id_index.get, drop) if p is not None]
                positions += [index.n_items + p for p in map(prepared.extra_index.get, drop) if p is not None]
                row[positions] = -np.inf
            best = top_k(row, n, lambda p: index.id_of(p, prepared))
            b = bias[i]  # a row's constant: the same order with or without it; added (in float32) to the n kept
            answers.append([(index.id_of(p, prepared), float(row[p] + b)) for p in best])
        yield BatchBlock(names, answers)


def block_scores(snap: ModelSnapshot, rows: np.ndarray, with_bias: bool = True, out: np.ndarray | None = None):
    """Scores (len(rows), n_candidates) float32 of known users ``rows`` as the service scores them without
    fresh interactions: LightFM's, blended per the warm users' policy; items outside the catalogue at -inf.

    ``with_bias`` False returns ``(scores, bias)`` instead: LightFM's scores without each row's user bias
    (a constant per row, so the ranking is the same) and the biases (len(rows),) float32 to add to the few
    scores kept; that saves a pass over the whole block (at 100K items the block is ~130 MB). With an
    active warm blend the rows are standardised, the bias is already in, and ``bias`` is zeros. ``out``: a
    float32 buffer of at least (len(rows), n_candidates) to write the product into (a batch reuses one for
    every block instead of faulting in ~130 MB of fresh pages per block); the result may be a view of it.
    """
    model = snap.model
    index, prepared = model.index, snap.items
    queries = index.user_query_rows[rows]
    target = None if out is None else out[:len(rows), :prepared.n_candidates]
    if prepared.stacked is not None:
        scores = np.matmul(queries, prepared.stacked.T, out=target)
    elif not len(prepared.override_pos) and not prepared.extra_ids:
        scores = np.matmul(queries, index.item_matrix.T, out=target)  # no copy into a preallocated block
    else:
        scores = np.empty((len(rows), prepared.n_candidates), dtype=np.float32)
        scores[:, :index.n_items] = queries @ index.item_matrix.T
        if len(prepared.override_pos):
            scores[:, prepared.override_pos] = queries @ prepared.override_matrix.T
        if prepared.extra_ids:
            scores[:, index.n_items:] = queries @ prepared.extra_matrix.T
    bias = index.user_bias[rows].astype(np.float32)
    blend = index.policy.warm
    if with_bias or blend.active:
        scores += bias[:, None]
        bias = np.zeros_like(bias)
    if blend.active:
        scores = np.apply_along_axis(standardise, 1, scores)
        if blend.cooc > 0 and index.neighbors is not None and index.user_items is not None:
            cooc = np.zeros_like(scores)
            cooc[:, :index.n_items] = (index.user_items[rows] @ index.neighbors.matrix).toarray()
            scores += blend.cooc * np.apply_along_axis(standardise, 1, cooc)
        if blend.popularity > 0:
            pop = np.log1p(np.concatenate([index.popularity.scores, prepared.extra_baseline]))
            scores += blend.popularity * standardise(pop)[None, :]
    if len(prepared.blocked):
        scores[:, prepared.blocked] = -np.inf
    return scores if with_bias else (scores, bias)


def _exclusions(snap: ModelSnapshot, rows: np.ndarray, names: Sequence[str], store, exclude_seen: bool) -> list:
    """Per user, the ids to leave out: seen (or only negative) items from the store, else training items."""
    if store is not None:
        keys = store.keys
        with store.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.smembers(keys.user_seen(name))
                pipe.smembers(keys.user_negative(name))
            replies = pipe.execute()
        return [set(replies[2 * i]) if exclude_seen else set(replies[2 * i + 1]) for i in range(len(names))]
    if not exclude_seen or snap.model.user_items is None:
        return [set() for _ in names]
    user_items, ids = snap.model.user_items, snap.model.index.item_ids
    return [set(ids[user_items.indices[user_items.indptr[r]:user_items.indptr[r + 1]]]) for r in rows]


def to_redis(store, version: str, block: BatchBlock, ttl: int | None = None) -> None:
    """Write a block's answers to ``<prefix>user:{id}:batch`` as JSON {"model_version", "items"} (pipelined)."""
    with store.client.pipeline(transaction=False) as pipe:
        for user, items in zip(block.users, block.items):
            value = json.dumps({"model_version": version,
                                "items": [{"item_id": i, "score": round(s, 6)} for i, s in items]})
            pipe.set(store.keys.user_batch(user), value, ex=ttl)
        pipe.execute()
