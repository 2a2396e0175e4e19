"""LFMRecommender: LightFM with id maps, indicator features, and online prediction for all 16 cases.

Known/unknown users and items, with and without features, are handled as the table in the README
describes. Scores are LightFM's own: score = user_row @ U · item_row @ V + user_row @ bu + item_row @ bi,
computed with precomputed item representations so that a request costs one matrix-vector product.
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
from lightfm import LightFM

from .errors import NotFittedError, UnknownUserError
from .features import ROW_NORMS, FeatureSpace, frame_weights, normalize_id, vocabulary

log = logging.getLogger(__name__)

INDICATORS = {"both": (True, True), "users": (True, False), "items": (False, True), False: (False, False)}
LIGHTFM_PARAMS = (
    "no_components", "k", "n", "learning_schedule", "loss", "learning_rate", "rho", "epsilon",
    "item_alpha", "user_alpha", "max_sampled",
)
STRATEGY_PERSONALIZED = "personalized"  # known user (cases I, II, V, VI, IX, X)
STRATEGY_FEATURES = "features"  # unknown user scored through its features (III, VII, XI)
STRATEGY_POPULAR = "popular"  # nothing usable known about the user (IV, VIII, XII)

ItemFeatures = Mapping[str, Mapping[str, float]]


@dataclass
class Scored:
    """Scores of one request before they become a Series or a top-N list."""

    known_idx: np.ndarray | None  # internal item indices scored; None = every known item in order
    known_scores: np.ndarray
    extra_ids: list[str]  # unknown items scored through their features
    extra_scores: np.ndarray
    strategy: str
    unscorable: list[str] = field(default_factory=list)
    ignored_features: Counter = field(default_factory=Counter)
    extra_index: dict | None = None  # extra id -> position in extra_scores, when precomputed
    combined: np.ndarray | None = None  # known_scores and extra_scores are views of this [known, extra] array


@dataclass
class PreparedItems:
    """Item features turned into representations once (see LFMRecommender.prepare_items)."""

    features: dict  # item id -> features, as given
    override_pos: np.ndarray  # internal indices of known items whose features were given
    override_matrix: np.ndarray  # (len(override_pos), k + 1): representation and bias
    extra_ids: list[str]  # unknown items with usable features
    extra_matrix: np.ndarray  # (len(extra_ids), k + 1)
    unscorable: list[str]  # unknown items whose features are all unseen
    ignored_features: Counter
    owner: tuple  # (id() of the model that prepared them, its serving generation: bumped by fit/fit_partial/load)
    extra_baseline: np.ndarray  # popularity-scale scores of the extra items, for users served by the baseline
    # [every known item's row (given features override), extra rows]: one product scores all candidates;
    # None for catalogues above STACK_MAX_ROWS (then the known-item matrix is not copied)
    stacked: np.ndarray | None = field(default=None, repr=False)
    extra_index: dict = field(init=False, repr=False)  # extra id -> row of extra_matrix

    def __post_init__(self) -> None:
        self.extra_index = {e: i for i, e in enumerate(self.extra_ids)}


class LFMRecommender(LightFM):
    """A LightFM hybrid model that takes and returns external ids and serves cold users and items.

    Parameters
    ----------
    indicators : {"both", "users", "items", False}
        Which sides get an identity (indicator) feature per known id, in addition to named features.
    row_norm : {"features", "together", "none"}
        How a row's weights are scaled: "features" keeps the indicator at 1 and scales the named
        features to sum to 1; "together" (default) scales indicator and features jointly to sum to 1.
        On the demo world "together" gave 7% higher warm precision@10 and equal cold-user precision
        (docs/EVALUATION.md); "features" gave about twice the catalogue coverage.
    cache_size : int
        Capacity of the LRU cache of on-demand item representations (items with given features).
    **lightfm_kwargs
        Passed to :class:`lightfm.LightFM` (no_components, loss, learning_rate, random_state, ...).
    """

    def __init__(self, indicators: str | bool = "both", row_norm: str = "together", cache_size: int = 100_000,
                 **lightfm_kwargs):
        if indicators not in INDICATORS or isinstance(indicators, bool) and indicators is not False:
            raise ValueError(f"indicators must be one of 'both', 'users', 'items' or False, got {indicators!r}")
        if row_norm not in ROW_NORMS:
            raise ValueError(f"row_norm must be one of {ROW_NORMS}, got {row_norm!r}")
        unknown = set(lightfm_kwargs) - set(LIGHTFM_PARAMS) - {"random_state"}
        if unknown:
            raise ValueError(f"unknown LightFM parameter(s): {sorted(unknown)}")
        super().__init__(**lightfm_kwargs)
        self.indicators = indicators
        self.row_norm = row_norm
        self.cache_size = int(cache_size)
        self.user_space: FeatureSpace | None = None
        self.item_space: FeatureSpace | None = None
        self.user_features_: sp.csr_matrix | None = None
        self.item_features_: sp.csr_matrix | None = None
        self.baseline: pd.Series | None = None
        self._reset_serving()

    # ------------------------------------------------------------------ training

    def fit(self, interactions: pd.DataFrame, user_features: pd.DataFrame | None = None,
            item_features: pd.DataFrame | None = None, *, epochs: int = 10, num_threads: int = 1,
            verbose: bool = False, callback: Callable[[int, int], None] | None = None) -> "LFMRecommender":
        """Fit from scratch on a frame of (user_id, item_id[, weight]) and long-form feature frames.

        Known users and items are those in ``interactions``; feature rows of other ids are not used.
        ``callback(epoch, epochs)`` is called after every epoch (progress reporting).

        Raises
        ------
        ValueError
            Empty interactions, NaN/inf weights, missing columns, or ``indicators`` switched off on a
            side that has no features.
        """
        users_on, items_on = INDICATORS[self.indicators]
        for side, on, frame in (("user", users_on, user_features), ("item", items_on, item_features)):
            if not on and (frame is None or len(frame) == 0):
                raise ValueError(
                    f"indicators={self.indicators!r} has no {side} indicator, so {side}_features are required"
                )
        users, items, weights = _interaction_arrays(interactions)
        user_ids = np.asarray(sorted(set(users)), dtype=object)
        item_ids = np.asarray(sorted(set(items)), dtype=object)
        self.user_space = FeatureSpace(user_ids, vocabulary(user_features, "user_id", user_ids), users_on,
                                       self.row_norm)
        self.item_space = FeatureSpace(item_ids, vocabulary(item_features, "item_id", item_ids), items_on,
                                       self.row_norm)
        for side, space in (("user", self.user_space), ("item", self.item_space)):
            if space.n_columns == 0 or (not space.indicator and len(space.feature_names) == 0):
                raise ValueError(f"no {side} features apply to the {side}s in interactions, and "
                                 f"indicators={self.indicators!r} gives them no indicator")
        self.user_features_, _ = self.user_space.matrix(user_features, "user_id")
        self.item_features_, _ = self.item_space.matrix(item_features, "item_id")
        self.baseline = _popularity(items, weights, item_ids)
        self._reset_state()
        self._train(users, items, weights, epochs, num_threads, verbose, callback)
        return self

    def fit_partial(self, interactions: pd.DataFrame, user_features: pd.DataFrame | None = None,
                    item_features: pd.DataFrame | None = None, *, epochs: int = 1, num_threads: int = 1,
                    verbose: bool = False, callback: Callable[[int, int], None] | None = None) -> "LFMRecommender":
        """Continue training on the same ids and feature names.

        Feature frames of None keep the feature rows of the previous fit. Feature names not seen in
        the first fit are ignored and logged.

        Raises
        ------
        ValueError
            Ids that the first fit did not see, or the same input errors as :meth:`fit`.
        """
        self._require_fitted()
        users, items, weights = _interaction_arrays(interactions)
        for side, ids, space in (("user", users, self.user_space), ("item", items, self.item_space)):
            new = sorted(set(ids) - space.id_index.keys())
            if new:
                raise ValueError(f"fit_partial cannot add {side}s; {len(new)} new {side} id(s), e.g. {new[:5]} "
                                 f"(retrain with fit to include them)")
        if user_features is not None:
            self.user_features_, ignored = self.user_space.matrix(user_features, "user_id")
            _log_ignored("user", ignored)
        if item_features is not None:
            self.item_features_, ignored = self.item_space.matrix(item_features, "item_id")
            _log_ignored("item", ignored)
        if self.item_embedding_gradients is None or self.item_embedding_gradients.shape != self.item_embeddings.shape:
            self._reset_optimizer_state()  # loaded models carry no optimiser state
        self._train(users, items, weights, epochs, num_threads, verbose, callback)
        return self

    def _train(self, users, items, weights, epochs, num_threads, verbose, callback) -> None:
        """Run LightFM epochs on interaction arrays mapped through the id spaces."""
        rows = np.fromiter((self.user_space.id_index[u] for u in users), dtype=np.int32, count=len(users))
        cols = np.fromiter((self.item_space.id_index[i] for i in items), dtype=np.int32, count=len(items))
        shape = (self.user_space.n_ids, self.item_space.n_ids)
        agg = sp.coo_matrix((weights, (rows, cols)), shape=shape).tocsr()
        agg.sum_duplicates()
        agg.eliminate_zeros()
        agg = agg.tocoo()
        # LightFM treats entries > 0 as positives (and <= 0 as negatives for logistic loss); the
        # magnitude of the weight becomes the sample weight.
        labels = sp.coo_matrix((np.sign(agg.data).astype(np.float32), (agg.row, agg.col)), shape=shape)
        sample = sp.coo_matrix((np.abs(agg.data).astype(np.float32), (agg.row, agg.col)), shape=shape)
        self._reset_serving()
        epochs = int(epochs)
        if epochs < 0:
            raise ValueError("epochs must be >= 0")
        progress = range(epochs)
        if verbose:
            from tqdm import trange

            progress = trange(epochs, desc="epochs", unit="epoch")
        for epoch in progress:
            LightFM.fit_partial(self, labels, user_features=self.user_features_, item_features=self.item_features_,
                                sample_weight=sample, epochs=1, num_threads=num_threads)
            if callback is not None:
                callback(epoch + 1, epochs)
        if self.item_embeddings is None:  # epochs == 0: still initialise so the model can serve
            self._initialize(self.no_components, self.item_space.n_columns, self.user_space.n_columns)
        self._prepare_serving()

    def _reset_optimizer_state(self, placeholder: bool = False) -> None:
        """Fresh optimiser accumulators (as LightFM initialises them) for a model loaded from disk.

        With ``placeholder`` they are empty arrays: enough for LightFM.predict to accept the model
        without holding 4x the parameters in memory in every serving process.
        """
        for side in ("item", "user"):
            emb = getattr(self, f"{side}_embeddings")
            bias = getattr(self, f"{side}_biases")
            if placeholder:
                emb, bias = np.zeros((0, emb.shape[1]), dtype=np.float32), np.zeros(0, dtype=np.float32)
            start = 1.0 if self.learning_schedule == "adagrad" else 0.0  # as LightFM._initialize
            setattr(self, f"{side}_embedding_gradients", np.full_like(emb, start))
            setattr(self, f"{side}_embedding_momentum", np.zeros_like(emb))
            setattr(self, f"{side}_bias_gradients", np.full_like(bias, start))
            setattr(self, f"{side}_bias_momentum", np.zeros_like(bias))

    # ------------------------------------------------------------------ serving state

    def _reset_serving(self) -> None:
        """Drop precomputed arrays, the item cache and any ANN index (a refit or load invalidates them)."""
        self.ann_index = None  # optional recommender.ann.AnnIndex over _item_matrix (recommend(approximate=True))
        self._serving_generation = getattr(self, "_serving_generation", 0) + 1  # PreparedItems made before are refused
        self._item_matrix: np.ndarray | None = None  # (n_items, k + 1): representation and bias
        self._user_query: np.ndarray | None = None  # (n_users, k + 1): [representation, 1] (see _query)
        self._user_repr: np.ndarray | None = None  # a view of its first k columns
        self._user_bias: np.ndarray | None = None
        self._pop_sorted: np.ndarray | None = None
        self._bias_sorted: np.ndarray | None = None
        self._cache = LRUCache(maxsize=max(1, getattr(self, "cache_size", 100_000)))
        # (user id, features) -> (representation, bias, ignored names): repeat requests skip the row build
        self._user_cache = LRUCache(maxsize=USER_REPR_CACHE_SIZE)
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0

    def _prepare_serving(self) -> None:
        """Precompute item and known-user representations once per fitted or loaded model."""
        item_bias, item_repr = self.get_item_representations(self.item_features_)
        user_bias, user_repr = self.get_user_representations(self.user_features_)
        self._item_matrix = np.ascontiguousarray(np.hstack([item_repr, item_bias[:, None]]), dtype=np.float32)
        # each known user's query row built once here, not per request; _user_repr is a view of it
        self._user_query = np.ones((len(user_repr), user_repr.shape[1] + 1), dtype=np.float32)
        self._user_query[:, :-1] = user_repr
        self._user_query.flags.writeable = False
        self._user_repr = self._user_query[:, :-1]
        self._user_bias = user_bias.astype(np.float32)
        self._popularity = self.baseline.to_numpy(dtype=np.float64)
        self._pop_sorted = np.sort(self._popularity)
        self._bias_sorted = np.sort(item_bias.astype(np.float64))
        self._item_ids = self.item_space.ids
        self._item_id_list = self._item_ids.tolist()  # indexing a list by int is ~10x cheaper than an object array

    def _require_fitted(self) -> None:
        if self.user_space is None or self.user_embeddings is None:
            raise NotFittedError("the model is not fitted; call fit() or LFMRecommender.load() first")

    @property
    def uid_map(self) -> pd.Series:
        """External user id -> internal index."""
        self._require_fitted()
        return pd.Series(np.arange(self.user_space.n_ids), index=pd.Index(self.user_space.ids, dtype=object))

    @property
    def iid_map(self) -> pd.Series:
        """External item id -> internal index."""
        self._require_fitted()
        return pd.Series(np.arange(self.item_space.n_ids), index=pd.Index(self.item_space.ids, dtype=object))

    @property
    def n_users(self) -> int:
        """Number of known users."""
        return self.user_space.n_ids if self.user_space is not None else 0

    @property
    def n_items(self) -> int:
        """Number of known items."""
        return self.item_space.n_ids if self.item_space is not None else 0

    # ------------------------------------------------------------------ prediction

    def predict_online(self, user_id: object, item_ids: Iterable[object] | None = None,
                       user_features: Mapping[str, float] | None = None,
                       item_features: ItemFeatures | None = None, *, use_baseline: bool = True) -> pd.Series:
        """Scores for one user over candidate items, whatever is known about either.

        ``item_ids=None`` means every known item plus every item in ``item_features``. Items that are
        unknown and have no features cannot be scored and are left out. The Series carries
        ``attrs``: ``strategy`` ("personalized", "features" or "popular"), ``unscorable`` (item ids
        left out) and ``ignored_features`` (feature names not seen in training, with counts).

        Raises
        ------
        UnknownUserError
            Nothing usable is known about the user and ``use_baseline`` is False.
        ValueError
            Bad ids or feature weights.
        """
        scored = self._score(user_id, item_ids, user_features, item_features, use_baseline)
        known_ids = self._item_ids if scored.known_idx is None else self._item_ids[scored.known_idx]
        index = pd.Index(np.concatenate([known_ids, np.asarray(scored.extra_ids, dtype=object)]), dtype=object)
        result = pd.Series(np.concatenate([scored.known_scores, scored.extra_scores]).astype(np.float32),
                           index=index, name="score")
        result.attrs.update(strategy=scored.strategy, unscorable=scored.unscorable,
                            ignored_features=dict(scored.ignored_features))
        return result

    def recommend(self, user_id: object, n: int = 10, *, user_features: Mapping[str, float] | None = None,
                  item_features: ItemFeatures | None = None, item_ids: Iterable[object] | None = None,
                  exclude: Iterable[object] = (), use_baseline: bool = True,
                  info: dict | None = None, approximate: bool = False) -> list[tuple[str, float]]:
        """The best ``n`` items as (item_id, score), best first, leaving out ``exclude``.

        If ``info`` is a dict it receives ``strategy``, ``unscorable`` and ``ignored_features``.
        Ties are broken by item id so that answers are deterministic. With ``approximate`` and an
        ``ann_index`` attached (see recommender.ann), known items come from the approximate index
        instead of scoring every one (new and changed items are still scored exactly); if too few
        remain after exclusions, the exact path answers.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        excluded = set(exclude) if exclude else set()
        if excluded and not set(map(type, excluded)) <= _STR:  # one C-level pass in the usual all-str case
            excluded = {e if type(e) is str else normalize_id(e) for e in excluded}
        scored = None
        if approximate and self.ann_index is not None and item_ids is None and n > 0:
            scored = self._score_approximate(user_id, user_features, item_features, use_baseline,
                                             n + len(excluded) + 10)
            if scored is not None:
                result = self._top(scored, n, excluded)
                if len(result) >= n:
                    if info is not None:
                        info.update(strategy=scored.strategy, unscorable=scored.unscorable,
                                    ignored_features=dict(scored.ignored_features), approximate=True)
                    return result
        scored = self._score(user_id, item_ids, user_features, item_features, use_baseline)
        if info is not None:
            info.update(strategy=scored.strategy, unscorable=scored.unscorable,
                        ignored_features=dict(scored.ignored_features), approximate=False)
        return self._top(scored, n, excluded)

    def _top(self, scored: Scored, n: int, excluded: set[str]) -> list[tuple[str, float]]:
        """Top ``n`` of scored candidates without the excluded ids, ties broken by id.

        Writes -inf into the array it ranks: ``scored.combined``, a fresh concatenation, or
        ``known_scores`` when there are no extras; each is made per request.
        """
        known_scores = scored.known_scores
        n_known = len(known_scores)
        if scored.combined is not None:
            all_scores = scored.combined
        elif len(scored.extra_scores):
            all_scores = np.concatenate([known_scores, scored.extra_scores])
        else:
            all_scores = known_scores
        if excluded:
            positions = self._positions(scored, excluded, n_known)
            if len(positions):
                all_scores[positions] = -np.inf
        if n == 0 or len(all_scores) == 0:
            return []
        top = top_positions(all_scores, n)
        values = all_scores[top].tolist()
        ids = self._item_id_list
        known_idx = scored.known_idx.tolist() if scored.known_idx is not None else None
        extra_ids = scored.extra_ids
        # (-score, id) tuples sort best first, ties by id; excluded positions hold -inf
        ranked = sorted((-v, (ids[p] if known_idx is None else ids[known_idx[p]]) if p < n_known
                         else extra_ids[p - n_known]) for v, p in zip(values, top.tolist()) if v != _NEG_INF)[:n]
        return [(item, -negative) for negative, item in ranked]

    def _positions(self, scored: Scored, excluded: set[str], n_known: int) -> list[int]:
        """Positions in [known scores, extra scores] of the excluded ids that are among the candidates."""
        index = self.item_space.id_index
        if not scored.extra_ids and scored.known_idx is None:  # the common case: one pass
            return [p for p in map(index.get, excluded) if p is not None]
        internal = [p for p in map(index.get, excluded) if p is not None]
        if scored.known_idx is None:
            positions = internal
        else:
            positions = np.flatnonzero(np.isin(scored.known_idx, internal)).tolist() if internal else []
        if scored.extra_ids and len(internal) < len(excluded):  # extras are never known items
            extra_index = scored.extra_index
            if extra_index is None:
                extra_index = {e: i for i, e in enumerate(scored.extra_ids)}
            positions += [n_known + p for p in map(extra_index.get, excluded) if p is not None]
        return positions

    def prepare_items(self, item_features: ItemFeatures) -> PreparedItems:
        """Precompute representations of items given with features, for repeated use across requests.

        Pass the result as ``item_features`` to :meth:`recommend` or :meth:`predict_online`: scoring
        then costs one extra matrix-vector product instead of a Python loop over the items.
        """
        self._require_fitted()
        feats = {normalize_id(k): v for k, v in item_features.items()}
        ignored: Counter = Counter()
        index = self.item_space.id_index
        known = [(i, f) for i, f in feats.items() if i in index]
        unknown = [(i, f) for i, f in feats.items() if i not in index]
        width = self.no_components + 1
        known_vecs = self._item_rows(known, ignored)
        override = np.asarray([v if v is not None else np.zeros(width, np.float32) for v in known_vecs],
                              dtype=np.float32).reshape(-1, width)
        unknown_vecs = self._item_rows(unknown, ignored)
        extra_ids = [i for (i, _), v in zip(unknown, unknown_vecs) if v is not None]
        extra = np.asarray([v for v in unknown_vecs if v is not None], dtype=np.float32).reshape(-1, width)
        override_pos = np.asarray([index[i] for i, _ in known], dtype=np.int64)
        stacked = None
        if len(self._item_matrix) + len(extra) <= STACK_MAX_ROWS:
            stacked = np.concatenate([self._item_matrix, extra])
            stacked[override_pos] = override
            stacked.flags.writeable = False
        return PreparedItems(feats, override_pos, override,
                             extra_ids, extra, [i for (i, _), v in zip(unknown, unknown_vecs) if v is None],
                             ignored, self._owner_token(),
                             self._baseline_from_bias(extra[:, -1]) if len(extra) else np.zeros(0), stacked)

    def _score_prepared(self, user_vec, user_bias, prepared: PreparedItems, strategy: str,
                        ignored: Counter, query: np.ndarray | None) -> Scored:
        """Score every known item plus prepared items: one matrix-vector product (two or three without
        ``stacked``), no per-item loop."""
        ignored.update(prepared.ignored_features)
        if user_vec is None:
            # _top ranks a fresh concatenation of the two, so extra_baseline itself is never written
            return Scored(None, self._popularity.copy(), prepared.extra_ids, prepared.extra_baseline, strategy,
                          list(prepared.unscorable), ignored, prepared.extra_index)
        n_known = len(self._item_matrix)
        # known and extra scores in one buffer: _top ranks it as is instead of concatenating
        if prepared.stacked is not None:  # one product (each numpy call costs more than this math)
            combined = prepared.stacked @ query
        else:
            combined = np.empty(n_known + len(prepared.extra_ids), dtype=np.float32)
            np.matmul(self._item_matrix, query, out=combined[:n_known])
            if len(prepared.override_pos):
                combined[prepared.override_pos] = prepared.override_matrix @ query
            if prepared.extra_ids:
                np.matmul(prepared.extra_matrix, query, out=combined[n_known:])
        combined += user_bias
        return Scored(None, combined[:n_known], prepared.extra_ids, combined[n_known:], strategy,
                      list(prepared.unscorable), ignored, prepared.extra_index, combined)

    def _score_approximate(self, user_id, user_features, item_features, use_baseline, k: int) -> Scored | None:
        """Known-item candidates from the ANN index (plus exact scores of new and changed items).

        Returns None for users served by the popularity baseline (exact and cheap already).
        """
        ignored: Counter = Counter()
        user_vec, user_bias, query = self._user_vector(normalize_id(user_id), user_features, ignored)
        strategy = self._strategy(normalize_id(user_id), user_vec, use_baseline)
        if user_vec is None:
            return None
        prepared = item_features if isinstance(item_features, PreparedItems) else self.prepare_items(item_features or {})
        self._check_owner(prepared)
        ignored.update(prepared.ignored_features)
        rows, scores = self.ann_index.query(query, k)
        known_idx, known_scores = rows, scores + user_bias
        if len(prepared.override_pos):
            # items whose features changed since training: the index holds their old rows, score them exactly
            keep = ~np.isin(known_idx, prepared.override_pos)
            known_idx = np.concatenate([known_idx[keep], prepared.override_pos])
            known_scores = np.concatenate([known_scores[keep], prepared.override_matrix @ query + user_bias])
        extra_scores = prepared.extra_matrix @ query + user_bias
        return Scored(known_idx, known_scores.astype(np.float32), prepared.extra_ids, extra_scores, strategy,
                      list(prepared.unscorable), ignored, prepared.extra_index)

    def _owner_token(self) -> tuple:
        """What PreparedItems record: this object and the state of its serving arrays."""
        return id(self), self._serving_generation

    def _check_owner(self, prepared: PreparedItems) -> None:
        """PreparedItems hold another model's representations unless this model made them."""
        if prepared.owner != self._owner_token():
            raise ValueError("these PreparedItems were made by another model or before the last fit; "
                             "call prepare_items again")

    def _score(self, user_id, item_ids, user_features, item_features, use_baseline) -> Scored:
        """Score candidates for one user: the shared core of predict_online and recommend."""
        self._require_fitted()
        user_id = normalize_id(user_id)
        if isinstance(item_features, PreparedItems):
            self._check_owner(item_features)
            if item_ids is None:
                ignored = Counter()
                user_vec, user_bias, query = self._user_vector(user_id, user_features, ignored)
                strategy = self._strategy(user_id, user_vec, use_baseline)
                return self._score_prepared(user_vec, user_bias, item_features, strategy, ignored, query)
            item_features = item_features.features
        item_features = {normalize_id(k): v for k, v in item_features.items()} if item_features else {}
        ignored: Counter = Counter()
        user_vec, user_bias, query = self._user_vector(user_id, user_features, ignored)
        strategy = self._strategy(user_id, user_vec, use_baseline)

        index = self.item_space.id_index
        unscorable: list[str] = []
        overrides: list[tuple[int, str, Mapping[str, float]]] = []  # (position in known scores, id, features)
        extras: list[tuple[str, Mapping[str, float]]] = []
        if item_ids is None:
            known_idx = None
            for item, feats in item_features.items():
                pos = index.get(item)
                if pos is None:
                    extras.append((item, feats))
                else:
                    overrides.append((pos, item, feats))
        else:
            known: list[int] = []
            seen: set[str] = set()
            for raw in item_ids:
                item = normalize_id(raw)
                if item in seen:
                    continue
                seen.add(item)
                pos = index.get(item)
                if item in item_features:
                    if pos is None:
                        extras.append((item, item_features[item]))
                    else:
                        overrides.append((len(known), item, item_features[item]))
                        known.append(pos)
                elif pos is not None:
                    known.append(pos)
                else:
                    unscorable.append(item)
            known_idx = np.asarray(known, dtype=np.int64)

        extra_vecs = self._item_rows(extras, ignored)
        extra_ids = [item for (item, _), vec in zip(extras, extra_vecs) if vec is not None]
        unscorable.extend(item for (item, _), vec in zip(extras, extra_vecs) if vec is None)
        extra_matrix = np.asarray([vec for vec in extra_vecs if vec is not None], dtype=np.float32)

        if user_vec is not None:
            items_matrix = self._item_matrix if known_idx is None else self._item_matrix[known_idx]
            known_scores = items_matrix @ query + user_bias
            if overrides:
                vecs = self._item_rows([(item, feats) for _, item, feats in overrides], ignored)
                for (pos, _, _), vec in zip(overrides, vecs):
                    # a known item whose row is empty still scores as LightFM would: user bias only
                    known_scores[pos] = (vec @ query if vec is not None else np.float32(0)) + user_bias
            extra_scores = (extra_matrix @ query + user_bias if len(extra_matrix)
                            else np.zeros(0, dtype=np.float32))
        else:
            known_scores = self._popularity.copy() if known_idx is None else self._popularity[known_idx]
            extra_scores = self._baseline_from_bias(extra_matrix[:, -1]) if len(extra_matrix) else np.zeros(0)
        if ignored:
            log.debug("ignored %d feature name(s) unseen in training: %s", sum(ignored.values()),
                      list(ignored)[:10])
        return Scored(known_idx, known_scores, extra_ids, extra_scores, strategy, unscorable, ignored)

    def _strategy(self, user_id: str, user_vec, use_baseline: bool) -> str:
        """Which case serves the user; UnknownUserError if only the baseline could and it is not allowed."""
        if user_vec is not None:
            return STRATEGY_PERSONALIZED if user_id in self.user_space.id_index else STRATEGY_FEATURES
        if not use_baseline:
            raise UnknownUserError(f"nothing usable is known about user {user_id!r} (not in training, no known "
                                   f"features) and use_baseline=False")
        return STRATEGY_POPULAR

    def _user_vector(self, user_id: str, user_features: Mapping[str, float] | None,
                     ignored: Counter) -> tuple[np.ndarray | None, np.float32, np.ndarray | None]:
        """(representation, bias, query) of the user; (None, 0, None) for an unknown user with no usable
        features. ``query`` is [representation, 1] (see _query), cached with representations built from
        features.
        """
        pos = self.user_space.id_index.get(user_id)
        if user_features is None:
            if pos is None:
                return None, np.float32(0), None
            return self._user_repr[pos], self._user_bias[pos], self._user_query[pos]
        key = (user_id, _features_key(user_features))
        with self._cache_lock:
            hit = self._user_cache.get(key)
        if hit is None:
            cols, weights, unseen = self.user_space.row(user_id, user_features)
            if len(cols) == 0 and pos is None:
                vec, bias, query = None, np.float32(0), None
            else:
                # one sparse row: index the few embedding rows directly (scipy's matmul costs more than the math)
                vec = (weights @ self.user_embeddings[cols]).astype(np.float32)
                bias = np.float32(weights @ self.user_biases[cols])
                query = _query(vec)
                vec.flags.writeable = query.flags.writeable = False  # shared by every request of this user
            hit = (vec, bias, unseen, query)
            with self._cache_lock:
                self._user_cache[key] = hit
        ignored.update(hit[2])
        return hit[0], hit[1], hit[3]

    def _item_rows(self, items: Sequence[tuple[str, Mapping[str, float]]], ignored: Counter) -> list:
        """[representation..., bias] for items given with features; LRU-cached per model and content."""
        out = []
        for item, feats in items:
            key = (item, _features_key(feats))
            with self._cache_lock:
                hit = self._cache.get(key)
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
                    self._cache[key] = (vec, unseen)
            ignored.update(unseen)
            out.append(vec)
        return out

    def _baseline_from_bias(self, biases: np.ndarray) -> np.ndarray:
        """Popularity-scale scores for new items: the popularity at each bias's quantile among known items."""
        frac = np.searchsorted(self._bias_sorted, biases, side="right") / len(self._bias_sorted)
        return np.quantile(self._pop_sorted, np.minimum(frac, 1.0))

    # ------------------------------------------------------------------ persistence

    def save(self, directory) -> None:
        """Write the model as arrays.npz + meta.json (no pickle); see recommender.artifacts."""
        from .artifacts import save_model

        save_model(self, directory)

    @classmethod
    def load(cls, directory) -> "LFMRecommender":
        """Load a model written by :meth:`save`; raises ArtifactError on a damaged or foreign directory."""
        from .artifacts import load_model

        return load_model(directory, cls)


def _query(user_vec: np.ndarray) -> np.ndarray:
    """[user representation, 1]: one dot product with an item row gives representation . user + item bias."""
    query = np.empty(len(user_vec) + 1, dtype=np.float32)
    query[:-1] = user_vec
    query[-1] = 1.0
    return query


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


def _interaction_arrays(interactions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (users, items, weights) arrays from an interactions frame."""
    if not isinstance(interactions, pd.DataFrame):
        raise ValueError("interactions must be a pandas DataFrame with columns user_id, item_id[, weight]")
    for col in ("user_id", "item_id"):
        if col not in interactions.columns:
            raise ValueError(f"interactions need a {col!r} column, have {list(interactions.columns)}")
    if len(interactions) == 0:
        raise ValueError("interactions are empty: there is nothing to train on")
    weights = frame_weights(interactions)
    users = interactions["user_id"].map(normalize_id).to_numpy(dtype=object)
    items = interactions["item_id"].map(normalize_id).to_numpy(dtype=object)
    return users, items, weights


def _popularity(items: np.ndarray, weights: np.ndarray, item_ids: np.ndarray) -> pd.Series:
    """Interaction count per item, ties broken by mean weight (scaled into [0, 0.99])."""
    frame = pd.DataFrame({"item": items, "w": weights})
    stats = frame.groupby("item")["w"].agg(["count", "mean"]).reindex(item_ids)
    mean = stats["mean"].to_numpy(dtype=np.float64)
    span = mean.max() - mean.min()
    tie = (mean - mean.min()) / span * 0.99 if span > 0 else np.zeros_like(mean)
    return pd.Series(stats["count"].to_numpy(dtype=np.float64) + tie, index=pd.Index(item_ids, dtype=object),
                     name="popularity")


def _log_ignored(side: str, ignored: Counter) -> None:
    if ignored:
        log.warning("%s feature names not seen in the first fit were ignored: %s", side,
                    dict(ignored.most_common(10)))


_STR = {str}
_NEG_INF = float("-inf")
USER_REPR_CACHE_SIZE = 10_000  # cached user representations per model (~1.6 KB each at k=32: 16 MB)
STACK_MAX_ROWS = 200_000  # PreparedItems copy the item matrix (26 MB at k=32) only up to this many rows
_SAMPLE_SIZE = 4096  # sample used to find a threshold for the top-k


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
        if rank < len(sample):
            threshold = np.partition(sample, len(sample) - rank)[len(sample) - rank]
            candidates = np.flatnonzero(scores >= threshold)
            if len(candidates) >= n:  # then the n-th best score is >= threshold: all ties are candidates
                values = scores[candidates]
                kth = np.partition(values, len(values) - n)[len(values) - n]
                return candidates[values >= kth]
    kth = np.partition(scores, total - n)[total - n]
    return np.flatnonzero(scores >= kth)
