"""The scoring index: a fitted model's parameters turned into what a request needs, and the one scoring path.

Per model version the item side is frozen, so the item representations and biases are computed once
into one ``(n_items, k + 1)`` matrix ``[representation, bias]``, and each known user's query row
``[representation, 1]`` once into a ``(n_users, k + 1)`` matrix: a request's scores are then one
matrix-vector product, ``item_matrix @ query + user_bias``, which is exactly LightFM's
``user_repr . item_repr + user_bias + item_bias`` (checked against ``LightFM.predict`` to 1e-5).

A request goes through four steps, each in one place:

1. :meth:`ScoringIndex.user_query` decides who the user is (the strategy: ``personalized``,
   ``features`` or ``popular``) and builds its query row from its features (LRU-cached by content);
2. candidate items are the known items plus :class:`PreparedItems` (new items scored through their
   features, and known items whose features changed), in one position space: known item ``p`` at
   ``p``, the j-th new item at ``n_items + j``; ``item_ids`` restricts them to a list of positions;
3. :meth:`ScoringIndex.scores` scores positions (one product; the popularity baseline for users
   nothing usable is known about);
4. candidate filters (today: exclusions) set scores to ``-inf`` and :func:`~.topk.top_k` cuts the
   top ``n``, ties broken by item id.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from cachetools import LRUCache

from ..errors import UnknownItemError, UnknownUserError
from ..features import FeatureSpace, normalize_id
from .foldin import Blend, ItemNeighbors, ServingPolicy, standardise
from .popularity import Popularity
from .topk import top_k

log = logging.getLogger(__name__)

STRATEGY_PERSONALIZED = "personalized"  # known user (cases I, II, V, VI, IX, X)
STRATEGY_FEATURES = "features"  # unknown user scored through its features (III, VII, XI)
STRATEGY_POPULAR = "popular"  # nothing usable known about the user (IV, VIII, XII)
STRATEGY_INTERACTIONS = "interactions"  # fold-in of interactions the model did not train on

ItemFeatures = Mapping[str, Mapping[str, float]]
USER_CACHE_SIZE = 10_000  # cached user representations per model (~1.6 KB each at k=32: 16 MB)
STACK_MAX_ROWS = 200_000  # PreparedItems copy the item matrix (26 MB at k=32) only up to this many rows
SUBSET_FRACTION = 8  # filters keeping fewer than 1/8 of the candidates are scored by gathering their rows
_STR = {str}
_NO_POSITIONS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class UserQuery:
    """Who a request is for: the strategy that serves the user and its query row.

    ``query`` is ``[representation, 1]`` (k + 1 float32, read-only) so that ``item_row @ query`` is
    ``item_repr . user_repr + item_bias``; None when the popularity baseline serves the user.
    """

    user_id: str
    strategy: str
    query: np.ndarray | None
    bias: np.float32
    ignored_features: Counter
    # a blend of rankers (recommender.model.foldin.Blend) with the user's items: (Blend, item positions,
    # weights); the scores are then z(model) + cooc * z(co-occurrence) + popularity * z(log popularity)
    blend: tuple | None = None


@dataclass
class PreparedItems:
    """Item features turned into representations once (see :meth:`ScoringIndex.prepare_items`)."""

    features: dict  # item id -> features, as given
    override_pos: np.ndarray  # internal indices of known items whose features were given
    override_matrix: np.ndarray  # (len(override_pos), k + 1): representation and bias
    extra_ids: list[str]  # unknown items with usable features, at positions n_items + j
    extra_matrix: np.ndarray  # (len(extra_ids), k + 1)
    unscorable: list[str]  # unknown items whose features are all unseen
    ignored_features: Counter
    owner: "ScoringIndex" = field(repr=False)
    extra_baseline: np.ndarray  # popularity-scale scores of the extra items, for users served by the baseline
    # [every known item's row (given features override), extra rows]: one product scores all candidates;
    # None for catalogues above STACK_MAX_ROWS (then the known-item matrix is not copied)
    stacked: np.ndarray | None = field(default=None, repr=False)
    # positions that may not be recommended (known items outside the catalogue), sorted
    blocked: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    extra_index: dict = field(init=False, repr=False)  # extra id -> row of extra_matrix
    _feature_index: dict | None = field(default=None, init=False, repr=False)
    _norms: np.ndarray | None = field(default=None, init=False, repr=False)
    _log_pop: np.ndarray | None = field(default=None, init=False, repr=False)
    _log_pop_z: np.ndarray | None = field(default=None, init=False, repr=False)
    _ids: list | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.extra_index = {e: i for i, e in enumerate(self.extra_ids)}

    def candidate_ids(self) -> list[str]:
        """Every candidate's id by position (known items, then ``extra_ids``): a list, built once per snapshot,
        because a ranking looks up ~25 ids (ties and answer) and a list index is the cheapest lookup."""
        if self._ids is None:
            self._ids = self.owner._item_id_list + self.extra_ids if self.extra_ids else self.owner._item_id_list
        return self._ids

    @property
    def n_candidates(self) -> int:
        """Known items plus new items: the size of the candidate position space."""
        return len(self.owner.item_matrix) + len(self.extra_ids)

    def feature_positions(self, name: str) -> np.ndarray:
        """Sorted candidate positions of the items that have feature ``name`` now: training-time features
        of known items, replaced by the given ones where given, and the new items' features."""
        index = self._feature_index
        if index is None:
            index = self._feature_index = self.owner.feature_index(self)
        return index.get(name, _NO_POSITIONS)

    def log_popularity(self) -> np.ndarray:
        """log(1 + popularity) of every candidate (new items: their popularity-scale baseline); computed once."""
        if self._log_pop is None:
            self._log_pop = np.log1p(np.maximum(np.concatenate([self.owner.popularity.scores, self.extra_baseline]),
                                                0.0))
        return self._log_pop

    def log_popularity_z(self) -> np.ndarray:
        """standardise(log_popularity()) over every candidate (float32); computed once."""
        if self._log_pop_z is None:
            self._log_pop_z = standardise(self.log_popularity()).astype(np.float32)
        return self._log_pop_z

    def norms(self) -> np.ndarray:
        """L2 norm of every candidate's representation (bias excluded), float32; computed once."""
        if self._norms is None:
            owner = self.owner
            known = np.linalg.norm(owner.item_matrix[:, :-1], axis=1)
            if len(self.override_pos):
                known[self.override_pos] = np.linalg.norm(self.override_matrix[:, :-1], axis=1)
            extra = np.linalg.norm(self.extra_matrix[:, :-1], axis=1)
            self._norms = np.concatenate([known, extra]).astype(np.float32)
        return self._norms


@dataclass
class Ranking:
    """The answer of :meth:`ScoringIndex.recommend`: the top items and how they were found.

    ``items`` are (item_id, score) pairs, best first (ties by item id); ``strategy`` names the case
    that served the user; ``unscorable`` lists candidates that could not be scored; ``ignored_features``
    counts feature names the model never saw; ``approximate`` is True when an ANN index chose the known
    candidates.
    """

    items: list[tuple[str, float]]
    strategy: str
    unscorable: list[str] = field(default_factory=list)
    ignored_features: dict = field(default_factory=dict)
    approximate: bool = False
    explored: list[int] = field(default_factory=list)  # slots filled at random (exploration), 0-based
    explore_pool: int = 0  # eligible items an explored slot was drawn from (its propensity is rate / pool)


class ScoringIndex:
    """Serving arrays of one fitted model, the caches built on them, and the one scoring path.

    Parameters
    ----------
    user_space, item_space : FeatureSpace
        Column layouts (known ids, feature names) of the two sides.
    user_embeddings, item_embeddings : ndarray, shape (n_columns, k)
    user_biases, item_biases : ndarray, shape (n_columns,)
    user_features, item_features : csr_matrix, shape (n_ids, n_columns)
        The training rows of the known users and items.
    popularity : Popularity
        The baseline for users nothing usable is known about.
    item_cache_size : int
        Capacity of the LRU cache of on-demand item rows (items given with features).
    """

    def __init__(self, *, user_space: FeatureSpace, item_space: FeatureSpace, user_embeddings: np.ndarray,
                 user_biases: np.ndarray, item_embeddings: np.ndarray, item_biases: np.ndarray,
                 user_features: sp.csr_matrix, item_features: sp.csr_matrix, popularity: Popularity,
                 item_cache_size: int = 100_000, policy: ServingPolicy | None = None,
                 neighbors: ItemNeighbors | None = None, user_items: sp.csr_matrix | None = None):
        self.user_space, self.item_space = user_space, item_space
        self.user_embeddings, self.user_biases = user_embeddings, user_biases
        self.item_embeddings, self.item_biases = item_embeddings, item_biases
        self.popularity = popularity
        self.k = int(item_embeddings.shape[1])
        item_repr = np.asarray(item_features @ item_embeddings, dtype=np.float32)
        item_bias = np.asarray(item_features @ item_biases, dtype=np.float32)
        user_repr = np.asarray(user_features @ user_embeddings, dtype=np.float32)
        #: (n_items, k + 1): [representation, bias] of every known item
        self.item_matrix = np.ascontiguousarray(np.hstack([item_repr, item_bias[:, None]]), dtype=np.float32)
        self.item_matrix.flags.writeable = False
        #: (n_users, k + 1): [representation, 1] of every known user, built once here, not per request
        self.user_query_rows = np.ones((len(user_repr), self.k + 1), dtype=np.float32)
        self.user_query_rows[:, :-1] = user_repr
        self.user_query_rows.flags.writeable = False
        #: (n_users,): each known user's bias (its training row's)
        self.user_bias = np.asarray(user_features @ user_biases, dtype=np.float32)
        self._bias_sorted = np.sort(item_bias.astype(np.float64))
        self.item_ids = item_space.ids
        self._item_id_list = self.item_ids.tolist()  # indexing a list by int is ~10x cheaper than an object array
        self._item_cache = LRUCache(maxsize=max(1, int(item_cache_size)))
        # (user id, features) -> (representation, bias, ignored names, query): repeat requests skip the row build
        self.user_cache = LRUCache(maxsize=USER_CACHE_SIZE)
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0
        self.item_features = item_features
        self._base_index: dict | None = None
        self.policy = policy or ServingPolicy()
        self.neighbors = neighbors
        self.user_items = user_items  # (n_users, n_items) binary: each known user's training items
        reps = self.item_matrix[:, :-1].astype(np.float64)
        #: (k, k): the known items' V'V / n_items, what least-squares fold-in penalises every item with
        self.gram = reps.T @ reps / max(1, len(reps))
        self.no_items = self.prepare_items({}, stack=False)

    @property
    def n_items(self) -> int:
        """Number of known items."""
        return len(self.item_matrix)

    # ------------------------------------------------------------------ users

    def user_query(self, user_id: object, user_features: Mapping[str, float] | None = None, *,
                   use_baseline: bool = True) -> UserQuery:
        """Who the user is and its query row.

        ``user_features=None`` means the training-time row for a known user (nothing for an unknown
        one); a mapping (``{}`` included) is the user's features now, combined with its indicator when
        the user is known.

        Raises
        ------
        UnknownUserError
            Only the baseline could serve the user and ``use_baseline`` is False.
        ValueError
            Bad id or feature weight.
        """
        uid = normalize_id(user_id)
        ignored: Counter = Counter()
        pos = self.user_space.id_index.get(uid)
        if user_features is None:
            if pos is None:
                query, bias = None, np.float32(0)
            else:
                query, bias = self.user_query_rows[pos], self.user_bias[pos]
        else:
            key = (uid, _features_key(user_features))
            with self._cache_lock:
                hit = self.user_cache.get(key)
            if hit is None:
                cols, weights, unseen = self.user_space.row(uid, user_features)
                if len(cols) == 0 and pos is None:
                    query, bias = None, np.float32(0)
                else:
                    # one sparse row: index the few embedding rows directly (scipy's matmul costs more)
                    query = np.empty(self.k + 1, dtype=np.float32)
                    query[:-1] = weights @ self.user_embeddings[cols]
                    query[-1] = 1.0
                    query.flags.writeable = False  # shared by every request of this user
                    bias = np.float32(weights @ self.user_biases[cols])
                hit = (query, bias, unseen)
                with self._cache_lock:
                    self.user_cache[key] = hit
            query, bias, unseen = hit
            ignored.update(unseen)
        if query is not None:
            strategy = STRATEGY_PERSONALIZED if pos is not None else STRATEGY_FEATURES
        elif use_baseline:
            strategy = STRATEGY_POPULAR
        else:
            raise UnknownUserError(f"nothing usable is known about user {uid!r} (not in training, no known "
                                   f"features) and use_baseline=False")
        return UserQuery(uid, strategy, query, bias, ignored)

    def _user(self, user_id, user_features, use_baseline: bool, prepared: PreparedItems,
              interactions: Mapping[str, float] | None, policy: ServingPolicy | None = None) -> UserQuery:
        """user_query, then the serving policy of the user's population (see recommender.model.foldin):
        fold-in of ``interactions`` (item id -> weight > 0, what the model did not train on) and the
        population's blend. A user nothing else is known about but its interactions is served by them."""
        policy = policy or self.policy
        user = self.user_query(user_id, user_features, use_baseline=use_baseline or bool(interactions))
        known = self.user_space.id_index.get(user.user_id)
        positions = np.zeros(0, dtype=np.int64)
        weights = np.zeros(0)
        if interactions:
            positions, _ = self.positions(interactions, prepared)
            weights = np.asarray([float(interactions[self.id_of(p, prepared)]) for p in positions.tolist()])
        query, strategy = user.query, user.strategy
        if len(positions) and known is None and policy.fresh_users == "popularity":
            positions = positions[:0]  # interactions lost to popularity on validation: served as if none
            query, strategy = None, STRATEGY_POPULAR
        if len(positions):
            blend = policy.warm if known is not None else policy.fresh
            if query is None or policy.fold_in.method != "off" or blend.cooc > 0:
                strategy = STRATEGY_INTERACTIONS  # what the user did changes its answer
            if policy.fold_in.method != "off":
                u0 = query[:-1].astype(np.float64) if query is not None else np.zeros(self.k)
                moved = np.empty(self.k + 1, dtype=np.float32)
                moved[:-1] = policy.fold_in.moved_query(u0, self._rows(prepared, positions), weights, self.gram)
                moved[-1] = 1.0
                query = moved
        elif known is not None:
            blend = policy.warm
        elif strategy == STRATEGY_FEATURES:
            if policy.feature_users == "popularity":  # the features lost to popularity on validation
                query, strategy = None, STRATEGY_POPULAR
            blend = policy.features if query is not None else Blend()
        else:
            blend = Blend()
        if query is None and strategy == STRATEGY_INTERACTIONS and not blend.active:
            blend = Blend(cooc=1.0)  # nothing but the interactions: rank by what co-occurs with them
        spec = None
        if blend.active:
            if known is not None and self.user_items is not None:  # its training items are its history too
                row = self.user_items.indices[self.user_items.indptr[known]:self.user_items.indptr[known + 1]]
                positions = np.concatenate([row.astype(np.int64), positions])
                weights = np.concatenate([np.ones(len(row)), weights])
            if blend.cooc == 0 or (self.neighbors is not None and len(positions)):
                spec = (blend, positions, weights)
            elif blend.popularity > 0:
                spec = (Blend(popularity=blend.popularity), positions, weights)
        if query is None and spec is None and strategy == STRATEGY_INTERACTIONS:
            strategy = STRATEGY_POPULAR  # nothing of its interactions could be used
        user = UserQuery(user.user_id, strategy, query, user.bias, user.ignored_features, spec)
        if query is None and spec is None and not use_baseline:
            raise UnknownUserError(f"nothing usable is known about user {user.user_id!r} and use_baseline=False")
        return user

    # ------------------------------------------------------------------ items

    def item_rows(self, items: Sequence[tuple[str, Mapping[str, float]]], ignored: Counter) -> list:
        """[representation..., bias] (k + 1 float32) of items given with features, or None for an item
        whose features are all unseen; LRU-cached per model and content."""
        out = []
        for item, feats in items:
            key = (item, _features_key(feats))
            with self._cache_lock:
                hit = self._item_cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                vec, unseen = hit
            else:
                self.cache_misses += 1
                cols, weights, unseen = self.item_space.row(item, feats)
                if len(cols) == 0:
                    vec = None
                else:
                    vec = np.append(weights @ self.item_embeddings[cols],
                                    weights @ self.item_biases[cols]).astype(np.float32)
                with self._cache_lock:
                    self._item_cache[key] = (vec, unseen)
            ignored.update(unseen)
            out.append(vec)
        return out

    def prepare_items(self, item_features: ItemFeatures, *, stack: bool = True,
                      recommendable: np.ndarray | None = None) -> PreparedItems:
        """Representations of items given with features, computed once for many requests.

        Known items given here are scored with these features instead of their training rows (an
        empty row scores as LightFM would: the user bias alone); unknown items with at least one known
        feature become new candidates; the others are listed as unscorable. With ``stack`` (and at most
        STACK_MAX_ROWS rows in all) the known matrix is copied once with the new rows appended, so a
        request scores every candidate with a single product. ``recommendable`` (bool, one per known
        item) says which known items are in the catalogue; the others are never recommended (None: all
        are; new items are candidates by being given).
        """
        feats = {normalize_id(k): v for k, v in item_features.items()}
        ignored: Counter = Counter()
        index = self.item_space.id_index
        known = [(i, f) for i, f in feats.items() if i in index]
        unknown = [(i, f) for i, f in feats.items() if i not in index]
        width = self.k + 1
        known_vecs = self.item_rows(known, ignored)
        override = np.asarray([v if v is not None else np.zeros(width, np.float32) for v in known_vecs],
                              dtype=np.float32).reshape(-1, width)
        unknown_vecs = self.item_rows(unknown, ignored)
        extra_ids = [i for (i, _), v in zip(unknown, unknown_vecs) if v is not None]
        extra = np.asarray([v for v in unknown_vecs if v is not None], dtype=np.float32).reshape(-1, width)
        override_pos = np.asarray([index[i] for i, _ in known], dtype=np.int64)
        stacked = None
        if stack and (len(override_pos) or len(extra)) and self.n_items + len(extra) <= STACK_MAX_ROWS:
            stacked = np.concatenate([self.item_matrix, extra])
            stacked[override_pos] = override
            stacked.flags.writeable = False
        blocked = _NO_POSITIONS
        if recommendable is not None:
            if recommendable.shape != (self.n_items,):
                raise ValueError(f"recommendable has shape {recommendable.shape}, expected ({self.n_items},)")
            blocked = np.flatnonzero(~recommendable)
        return PreparedItems(feats, override_pos, override, extra_ids, extra,
                             [i for (i, _), v in zip(unknown, unknown_vecs) if v is None], ignored, self,
                             self.popularity.for_new_items(extra[:, -1], self._bias_sorted), stacked, blocked)

    def _base_feature_index(self) -> dict[str, np.ndarray]:
        """Feature name -> sorted positions of the known items that have it in their training rows (once)."""
        base = self._base_index
        if base is None:
            space = self.item_space
            block = self.item_features[:, space.feature_offset:].tocsc()
            block.sort_indices()
            base = {name: block.indices[block.indptr[j]:block.indptr[j + 1]].astype(np.int64)
                    for j, name in enumerate(space.feature_names) if block.indptr[j + 1] > block.indptr[j]}
            self._base_index = base
        return base

    def feature_index(self, prepared: PreparedItems) -> dict[str, np.ndarray]:
        """Feature name -> sorted positions for ``prepared``'s candidates (see PreparedItems.feature_positions).

        Shares the base lists of features no given item touches; rebuilds the others.
        """
        base = self._base_feature_index()
        if not prepared.features:
            return base
        index, n = self.item_space.id_index, self.n_items
        removed: set[int] = set()
        added: dict[str, list[int]] = {}
        touched: set[str] = set()
        names = self.item_space.feature_names
        offset = self.item_space.feature_offset
        rows = self.item_features
        for item, feats in prepared.features.items():
            pos = index.get(item)
            if pos is not None:  # a known item: its training-time features no longer hold
                removed.add(pos)
                cols = rows.indices[rows.indptr[pos]:rows.indptr[pos + 1]]
                touched.update(names[c - offset] for c in cols if c >= offset)
            else:
                pos = prepared.extra_index.get(item)
                if pos is None:
                    continue  # unscorable: never a candidate
                pos += n
            for name, weight in feats.items():
                if weight:
                    added.setdefault(name, []).append(pos)
                    touched.add(name)
        out = dict(base)
        drop = np.fromiter(removed, dtype=np.int64, count=len(removed))
        for name in touched:
            kept = base.get(name, _NO_POSITIONS)
            if len(drop):
                kept = kept[~np.isin(kept, drop)]
            out[name] = np.unique(np.concatenate([kept, np.asarray(added.get(name, ()), dtype=np.int64)]))
        return out

    def allowed_positions(self, prepared: PreparedItems, filters: Sequence[Sequence[str]]) -> np.ndarray:
        """Sorted positions of the candidates that pass every filter group (a group passes when the item has
        any of its feature names)."""
        allowed = None
        for group in filters:
            lists = [prepared.feature_positions(name) for name in group]
            union = np.unique(np.concatenate(lists)) if len(lists) > 1 else lists[0]
            allowed = union if allowed is None else np.intersect1d(allowed, union, assume_unique=True)
            if not len(allowed):
                break
        return _NO_POSITIONS if allowed is None else allowed

    def prepared(self, item_features: ItemFeatures | PreparedItems | None) -> PreparedItems:
        """``item_features`` as PreparedItems of this index (a dict is prepared without a stacked copy).

        Raises
        ------
        ValueError
            PreparedItems made by another index (another model, or before the last fit).
        """
        if item_features is None:
            return self.no_items
        if isinstance(item_features, PreparedItems):
            if item_features.owner is not self:
                raise ValueError("these PreparedItems were made by another model or before the last fit; "
                                 "call prepare_items again")
            return item_features
        return self.prepare_items(item_features, stack=False)

    def id_of(self, position: int, prepared: PreparedItems) -> str:
        """The item id at a candidate position."""
        n = self.n_items
        return self._item_id_list[position] if position < n else prepared.extra_ids[position - n]

    def positions(self, ids: Iterable[object], prepared: PreparedItems) -> tuple[np.ndarray, list[str]]:
        """(positions of the ids that can be scored, in the given order without repeats; ids that cannot)."""
        index, extra, n = self.item_space.id_index, prepared.extra_index, self.n_items
        out: list[int] = []
        seen: set[str] = set()
        unscorable: list[str] = []
        for raw in ids:
            item = normalize_id(raw)
            if item in seen:
                continue
            seen.add(item)
            pos = index.get(item)
            if pos is None:
                pos = extra.get(item)
                if pos is None:
                    unscorable.append(item)
                    continue
                pos += n
            out.append(pos)
        return np.asarray(out, dtype=np.int64), unscorable

    def _excluded_positions(self, excluded: set[str], prepared: PreparedItems) -> list[int]:
        """Positions (in the whole candidate space) of the excluded ids that are candidates."""
        index = self.item_space.id_index
        found = [p for p in map(index.get, excluded) if p is not None]
        if prepared.extra_ids and len(found) < len(excluded):  # extras are never known items
            n = self.n_items
            found += [n + p for p in map(prepared.extra_index.get, excluded) if p is not None]
        return found

    # ------------------------------------------------------------------ scores

    def scores(self, user: UserQuery, prepared: PreparedItems, positions: np.ndarray | None = None) -> np.ndarray:
        """Scores (a fresh array the caller may write) of the candidate ``positions``, or of every
        candidate (known items, then ``prepared.extra_ids``) when None: LightFM's scores (float32) for a
        user with a query row; the popularity baseline (float64, so ties by mean weight survive) otherwise."""
        if user.blend is not None:
            return self._blended(user, prepared, positions)
        n = self.n_items
        if user.query is None:
            if positions is None:
                return np.concatenate([self.popularity.scores, prepared.extra_baseline])
            known = positions < n
            out = np.empty(len(positions), dtype=np.float64)
            out[known] = self.popularity.scores[positions[known]]
            out[~known] = prepared.extra_baseline[positions[~known] - n]
            return out
        return self._lightfm_scores(user.query, user.bias, prepared, positions)

    def _lightfm_scores(self, query: np.ndarray, bias, prepared: PreparedItems,
                        positions: np.ndarray | None) -> np.ndarray:
        """LightFM's scores (float32, a fresh array) of a query row for ``positions`` (every candidate: None)."""
        n = self.n_items
        if positions is None:
            if prepared.stacked is not None:  # one product (each numpy call costs more than this math)
                out = prepared.stacked @ query
            else:
                out = np.empty(n + len(prepared.extra_ids), dtype=np.float32)
                np.matmul(self.item_matrix, query, out=out[:n])
                if len(prepared.override_pos):
                    out[prepared.override_pos] = prepared.override_matrix @ query
                if prepared.extra_ids:
                    np.matmul(prepared.extra_matrix, query, out=out[n:])
        else:
            out = self._rows(prepared, positions) @ query
        out += bias
        return out

    def _blended(self, user: UserQuery, prepared: PreparedItems, positions: np.ndarray | None) -> np.ndarray:
        """z(model scores, or log popularity) + cooc x z(co-occurrence with the user's items) + popularity x
        z(log popularity), each standardised over the scored candidates (float64)."""
        blend, interacted, weights = user.blend
        n = prepared.n_candidates if positions is None else len(positions)
        if user.query is not None:  # the user bias shifts every score alike: standardising removes it
            out = standardise(self._lightfm_scores(user.query, 0.0, prepared, positions))
        elif positions is None:  # no model score: log popularity is the base
            out = prepared.log_popularity_z().copy()
        else:
            out = standardise(prepared.log_popularity()[positions])
        if blend.cooc > 0 and len(interacted):
            known = interacted < self.n_items
            item_item = self.neighbors.scores(interacted[known], weights[known])  # known items; new ones score 0
            if positions is None:
                if n > self.n_items:
                    item_item = np.concatenate([item_item, np.zeros(n - self.n_items, dtype=item_item.dtype)])
            else:
                inside = positions < self.n_items
                scored = np.zeros(n, dtype=item_item.dtype)
                scored[inside] = item_item[positions[inside]]
                item_item = scored
            z_item_item = standardise(item_item)
            z_item_item *= z_item_item.dtype.type(blend.cooc)
            out += z_item_item.astype(out.dtype, copy=False)
        if blend.popularity > 0 and user.query is not None:
            z_pop = prepared.log_popularity_z() if positions is None else \
                standardise(prepared.log_popularity()[positions])
            out += out.dtype.type(blend.popularity) * z_pop.astype(out.dtype, copy=False)
        return out

    def _rows(self, prepared: PreparedItems, positions: np.ndarray) -> np.ndarray:
        """The [representation, bias] rows of candidate positions (given features override training rows)."""
        if prepared.stacked is not None:
            return prepared.stacked[positions]
        n = self.n_items
        known = positions < n
        rows = np.empty((len(positions), self.k + 1), dtype=np.float32)
        rows[known] = self.item_matrix[positions[known]]
        rows[~known] = prepared.extra_matrix[positions[~known] - n]
        if len(prepared.override_pos):
            where = np.flatnonzero(np.isin(positions, prepared.override_pos))
            if len(where):
                slot = {p: i for i, p in enumerate(prepared.override_pos.tolist())}
                rows[where] = prepared.override_matrix[[slot[p] for p in positions[where].tolist()]]
        return rows

    # ------------------------------------------------------------------ answers

    def predict_online(self, user_id: object, item_ids: Iterable[object] | None = None,
                       user_features: Mapping[str, float] | None = None,
                       item_features: ItemFeatures | PreparedItems | None = None, *,
                       use_baseline: bool = True, interactions: Mapping[str, float] | None = None,
                       policy: ServingPolicy | None = None) -> pd.Series:
        """Scores of candidate items for one user as a Series (see LFMRecommender.predict_online)."""
        prepared = self.prepared(item_features)
        user = self._user(user_id, user_features, use_baseline, prepared, interactions, policy)
        if item_ids is None:
            positions, unscorable = None, list(prepared.unscorable)
            ids = np.concatenate([self.item_ids, np.asarray(prepared.extra_ids, dtype=object)])
        else:
            positions, unscorable = self.positions(item_ids, prepared)
            ids = np.asarray([self.id_of(p, prepared) for p in positions.tolist()], dtype=object)
        result = pd.Series(self.scores(user, prepared, positions), index=pd.Index(ids, dtype=object), name="score")
        ignored = user.ignored_features + prepared.ignored_features
        result.attrs.update(strategy=user.strategy, unscorable=unscorable, ignored_features=dict(ignored))
        return result

    def recommend(self, user_id: object, n: int = 10, *, user_features: Mapping[str, float] | None = None,
                  item_features: ItemFeatures | PreparedItems | None = None,
                  item_ids: Iterable[object] | None = None, exclude: Iterable[object] = (),
                  use_baseline: bool = True, filters: Sequence[Sequence[str]] = (),
                  interactions: Mapping[str, float] | None = None,
                  explore: tuple[float, int] | None = None) -> Ranking:
        """The best ``n`` candidates for one user, without ``exclude`` (see LFMRecommender.recommend).

        Raises
        ------
        ValueError
            ``n`` is not a non-negative integer, bad ids or feature weights, foreign PreparedItems.
        UnknownUserError
            Only the baseline could serve the user and ``use_baseline`` is False.
        """
        check_n(n)
        prepared = self.prepared(item_features)
        user = self._user(user_id, user_features, use_baseline, prepared, interactions)
        if item_ids is None:
            positions, unscorable = None, list(prepared.unscorable)
        else:
            positions, unscorable = self.positions(item_ids, prepared)
        return self.rank(user, prepared, n, excluded_ids(exclude), positions, unscorable, filters=filters,
                         explore=explore)

    def rank(self, user: UserQuery, prepared: PreparedItems, n: int, excluded: set[str],
             positions: np.ndarray | None = None, unscorable: Sequence[str] = (), approximate: bool = False,
             filters: Sequence[Sequence[str]] = (), divide_by: np.ndarray | None = None,
             explore: tuple[float, int] | None = None) -> Ranking:
        """Score ``positions`` (every candidate when None), apply the candidate filters, cut the top ``n``.

        The candidate filters, in this one place: ``filters`` (feature groups that must all hold; when
        they keep few candidates only those are scored), ``prepared.blocked`` (items outside the
        catalogue) and ``excluded`` ids. ``divide_by`` (one value per candidate position) turns dot
        products into cosines for :meth:`similar`. ``explore`` (rate, seed): each slot of the answer is,
        with probability ``rate``, given to an item drawn uniformly at random among all eligible candidates
        (see :func:`_explore`; an unbiased evaluation sample, reproducible from the seed).
        """
        dense_filter = None
        if filters:
            allowed = self.allowed_positions(prepared, filters)
            if positions is not None:
                positions = positions[np.isin(positions, allowed)]
            elif len(allowed) * SUBSET_FRACTION < prepared.n_candidates:
                positions = allowed
            else:
                dense_filter = np.ones(prepared.n_candidates, dtype=bool)
                dense_filter[allowed] = False  # True where the filters fail
        scores = self.scores(user, prepared, positions)
        if divide_by is not None:
            scores /= divide_by if positions is None else divide_by[positions]
        if dense_filter is not None:
            scores[dense_filter] = -np.inf
        drop = self._excluded_positions(excluded, prepared) if excluded else []
        if len(prepared.blocked):
            drop = np.concatenate([np.asarray(drop, dtype=np.int64), prepared.blocked])
        if len(drop):
            if positions is not None:
                drop = np.flatnonzero(np.isin(positions, drop))
            scores[drop] = -np.inf
        if positions is None:
            id_of = prepared.candidate_ids().__getitem__
        else:
            listed = positions.tolist()
            id_of = lambda p: self.id_of(listed[p], prepared)  # noqa: E731
        top = top_k(scores, n, id_of)
        explored, pool_size = [], 0
        if explore is not None and explore[0] > 0 and top:
            top, explored, pool_size = _explore(scores, top, explore, lambda m: top_k(scores, m, id_of))
        items = [(id_of(p), float(scores[p])) for p in top]
        ignored = user.ignored_features + prepared.ignored_features if prepared.ignored_features \
            else user.ignored_features
        return Ranking(items, user.strategy, list(unscorable), dict(ignored), approximate, explored, pool_size)

    def similar(self, item_id: object, n: int = 10, *, item_features: ItemFeatures | PreparedItems | None = None,
                exclude: Iterable[object] = (), filters: Sequence[Sequence[str]] = ()) -> Ranking:
        """The ``n`` candidates nearest to an item by cosine of their representations (bias excluded).

        "Similar" means: liked by the same users, as far as the model learned it, through indicators and
        features alike; a new item is placed by its features. The item itself, ``exclude`` and items
        outside the catalogue are left out; ``filters`` as in :meth:`rank`. ``Ranking.strategy`` is
        "similar" and the scores are cosines in [-1, 1].

        Raises
        ------
        UnknownItemError
            The item is neither known nor given with usable features.
        """
        check_n(n)
        prepared = self.prepared(item_features)
        iid = normalize_id(item_id)
        pos = self.item_space.id_index.get(iid)
        if pos is None:
            pos = prepared.extra_index.get(iid)
            if pos is None:
                raise UnknownItemError(f"item {iid!r} is not known to the model and has no usable features")
            pos += self.n_items
        rep = self._rows(prepared, np.asarray([pos]))[0, :-1]
        norm = float(np.linalg.norm(rep))
        if norm == 0:  # no direction to compare with
            return Ranking([], "similar")
        query = np.zeros(self.k + 1, dtype=np.float32)
        query[:-1] = rep / norm  # the bias column gets weight 0: cosine of the representations only
        norms = prepared.norms()
        divide_by = np.where(norms > 0, norms, np.inf).astype(np.float32)
        probe = UserQuery(iid, "similar", query, np.float32(0), Counter())
        excluded = excluded_ids(exclude) | {iid}
        return self.rank(probe, prepared, n, excluded, filters=filters, divide_by=divide_by)


def _explore(scores: np.ndarray, top: list[int], explore: tuple[float, int],
             ranked: Callable[[int], list[int]]) -> tuple[list[int], list[int], int]:
    """Fill random slots of an answer with random eligible items: (answer, explored slots, pool size).

    Each slot is explored with probability ``rate``; each explored slot gets an item drawn uniformly,
    without replacement, from *every* eligible candidate (the model's own picks included), so the chance
    of an item to be drawn (``1 / pool``) does not depend on the serving model: that is what makes the
    explored slots an unbiased test set for any other model (recommender.online_eval, replay). The other
    slots keep the model's order, skipping drawn items. ``ranked(m)`` gives the model's best ``m``.
    """
    rate, seed = explore
    rng = np.random.default_rng(seed)
    slots = np.flatnonzero(rng.random(len(top)) < rate)
    if not len(slots):
        return top, [], 0
    eligible = np.flatnonzero(np.isfinite(scores))
    if not len(eligible):
        return top, [], 0
    picks = rng.choice(eligible, size=min(len(slots), len(eligible)), replace=False).tolist()
    slots = slots[:len(picks)].tolist()
    drawn = set(picks)
    rest = iter([p for p in ranked(len(top) + len(picks)) if p not in drawn])
    at_slot = dict(zip(slots, picks))
    answer = [at_slot[s] if s in at_slot else next(rest) for s in range(len(top))]
    return answer, slots, int(len(eligible))


def check_n(n: object) -> int:
    """``n`` itself when it is a non-negative integer, else ValueError."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return int(n)


def excluded_ids(exclude: Iterable[object]) -> set[str]:
    """A set of canonical ids (one C-level pass in the usual all-str case)."""
    excluded = set(exclude)
    if excluded and not set(map(type, excluded)) <= _STR:
        excluded = {e if type(e) is str else normalize_id(e) for e in excluded}
    return excluded


def _features_key(feats: Mapping[str, float]) -> tuple:
    """A hashable, order-independent key of a feature dict (cache key part).

    Names and values keep their types, so that an input the row builder rejects (``True``, ``"1"``,
    a name ``5``) never shares a key with an accepted one and is validated, not served from the cache.
    """
    try:
        return tuple(sorted((k, type(v), v) for k, v in feats.items()))
    except (TypeError, ValueError):
        # leave validation (and its clear message) to the row builder
        return (hashlib.sha1(repr(sorted(map(repr, feats.items()))).encode()).hexdigest(),)
