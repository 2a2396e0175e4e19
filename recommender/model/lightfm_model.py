"""LFMRecommender: LightFM with id maps, indicator features, and online prediction for all 16 cases.

Known/unknown users and items, with and without features, are handled as the table in the README
describes. Scores are LightFM's own: score = user_row @ U · item_row @ V + user_row @ bu + item_row @ bi,
computed with precomputed item representations so that a request costs one matrix-vector product.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from lightfm import LightFM

from ..errors import NotFittedError
from ..features import ROW_NORMS, FeatureSpace, frame_weights, normalize_id, vocabulary
from . import artifacts
from .foldin import ItemNeighbors, ServingPolicy
from .index import ItemFeatures, PreparedItems, Ranking, ScoringIndex
from .popularity import Popularity

log = logging.getLogger(__name__)

NEIGHBORS_MAX_ITEMS = 200_000  # the item-item ranker (foldin.ItemNeighbors) is built up to this many items
#: indicators setting -> (user indicator on, item indicator on)
INDICATORS = {"both": (True, True), "users": (True, False), "items": (False, True), False: (False, False)}
#: LightFM's own constructor parameters (and the losses it implements)
LIGHTFM_PARAMS = (
    "no_components", "k", "n", "learning_schedule", "loss", "learning_rate", "rho", "epsilon",
    "item_alpha", "user_alpha", "max_sampled",
)
LOSSES = ("warp", "bpr", "logistic", "warp-kos")


class LFMRecommender(LightFM):
    """A LightFM hybrid model that takes and returns external ids and serves cold users and items.

    Parameters
    ----------
    indicators : {"both", "users", "items", False}
        Which sides get an identity (indicator) feature per known id, in addition to named features.
    row_norm : {"features", "together", "none"}
        How a row's weights are scaled: "features" (default) keeps the indicator at 1 and scales the
        named features to sum to 1; "together" scales indicator and features jointly to sum to 1; "none"
        leaves them as given. Real features are weak: on MovieLens 100K "together" cost almost half of
        the warm precision@10 (0.137 vs 0.254, pure collaborative filtering 0.252), and so it does on
        the demo world built to behave like it (docs/EVALUATION.md, docs/WORLD.md).
    cache_size : int
        Capacity of the LRU cache of on-demand item representations (items with given features).
    **lightfm_kwargs
        Passed to :class:`lightfm.LightFM` (no_components, loss, learning_rate, random_state, ...).
        The defaults differ from LightFM's where they were measured to: ``loss="warp"`` (LightFM:
        logistic), ``no_components=32`` (10), ``learning_rate=0.05``; with them and ``fit``'s 30 epochs,
        warm precision@10 matches pure collaborative filtering (docs/EVALUATION.md).
    """

    def __init__(self, indicators: str | bool = "both", row_norm: str = "features", cache_size: int = 100_000,
                 **lightfm_kwargs):
        if indicators not in INDICATORS or isinstance(indicators, bool) and indicators is not False:
            raise ValueError(f"indicators must be one of 'both', 'users', 'items' or False, got {indicators!r}")
        if row_norm not in ROW_NORMS:
            raise ValueError(f"row_norm must be one of {ROW_NORMS}, got {row_norm!r}")
        unknown = set(lightfm_kwargs) - set(LIGHTFM_PARAMS) - {"random_state"}
        if unknown:
            raise ValueError(f"unknown LightFM parameter(s): {sorted(unknown)}")
        lightfm_kwargs.setdefault("loss", "warp")
        lightfm_kwargs.setdefault("no_components", 32)
        super().__init__(**lightfm_kwargs)
        self.indicators = indicators
        self.row_norm = row_norm
        self.cache_size = int(cache_size)
        self.user_space: FeatureSpace | None = None
        self.item_space: FeatureSpace | None = None
        self.user_features_: sp.csr_matrix | None = None
        self.item_features_: sp.csr_matrix | None = None
        self.popularity: Popularity | None = None
        self.policy = ServingPolicy()  # how each population is served (the trainer picks it by validation)
        self.neighbors: ItemNeighbors | None = None  # item co-occurrence, for the policy's blends
        self.user_items: sp.csr_matrix | None = None  # (n_users, n_items) binary: known users' positive items
        self._reset_serving()

    # ------------------------------------------------------------------ training

    def fit(self, interactions: pd.DataFrame, user_features: pd.DataFrame | None = None,
            item_features: pd.DataFrame | None = None, *, epochs: int = 30, num_threads: int = 1,
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
        rows, cols = self._codes(users, items)
        keep, _ = positive_records(rows, cols, weights, len(item_ids))
        self.popularity = Popularity.fit(cols[keep], weights[keep], item_ids)
        self.neighbors, self.user_items = None, None
        if len(item_ids) <= NEIGHBORS_MAX_ITEMS:
            self.user_items = _binary(rows[keep], cols[keep], (len(user_ids), len(item_ids)))
            self.neighbors = ItemNeighbors.for_policy(self.policy, self.user_items)  # the policy's item-item ranker
        self._reset_state()
        self._train(rows, cols, weights, epochs, num_threads, verbose, callback)
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
        self._train(*self._codes(users, items), weights, epochs, num_threads, verbose, callback)
        return self

    def _codes(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Internal (row, column) indices of aligned user and item id arrays (all known)."""
        rows = np.fromiter((self.user_space.id_index[u] for u in users), dtype=np.int32, count=len(users))
        cols = np.fromiter((self.item_space.id_index[i] for i in items), dtype=np.int32, count=len(items))
        return rows, cols

    def _train(self, rows, cols, weights, epochs, num_threads, verbose, callback) -> None:
        """Run LightFM epochs on interaction arrays mapped through the id spaces.

        A (user, item) pair is a positive when it has records of weight > 0 and none of weight <= 0; its
        sample weight is the sum of its positive weights. A pair with any record of weight <= 0 is a
        negative signal: never a positive (a later positive does not undo it). LightFM's logistic loss
        learns from negatives (label -1, sample weight 1); WARP and BPR sample their negatives
        themselves, so the pair is simply left out of their matrix (and may be sampled as a negative).
        """
        shape = (self.user_space.n_ids, self.item_space.n_ids)
        keep, negative_pairs = positive_records(rows, cols, weights, shape[1])
        agg = sp.coo_matrix((weights[keep], (rows[keep], cols[keep])), shape=shape).tocsr()
        agg.sum_duplicates()
        agg.eliminate_zeros()
        agg = agg.tocoo()
        r, c = agg.row, agg.col
        if not len(r):
            raise ValueError("there is no positive interaction (weight > 0) to train on")
        label, sample = np.ones(len(r), dtype=np.float32), agg.data.astype(np.float32)
        if self.loss == "logistic" and len(negative_pairs):
            neg_r, neg_c = negative_pairs // shape[1], negative_pairs % shape[1]
            r, c = np.concatenate([r, neg_r]), np.concatenate([c, neg_c])
            label = np.concatenate([label, -np.ones(len(neg_r), dtype=np.float32)])
            sample = np.concatenate([sample, np.ones(len(neg_r), dtype=np.float32)])
        labels = sp.coo_matrix((label, (r, c)), shape=shape)
        # k-OS WARP takes no sample weights (LightFM refuses them): every positive counts once
        sample = None if self.loss == "warp-kos" else sp.coo_matrix((sample, (r, c)), shape=shape)
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
            if not (np.isfinite(self.item_embeddings).all() and np.isfinite(self.user_embeddings).all()):
                raise ValueError(f"training diverged (NaN or inf parameters after epoch {epoch + 1}); "
                                 f"lower the learning rate or the interaction weights")
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
        """Drop the scoring index and any ANN index (a refit or load invalidates them)."""
        self.index: ScoringIndex | None = None
        self._ann_index = None
        self._approximate = None

    def _prepare_serving(self) -> None:
        """Build the scoring index (serving arrays and caches) once per fitted or loaded model."""
        self.index = ScoringIndex(user_space=self.user_space, item_space=self.item_space,
                                  user_embeddings=self.user_embeddings, user_biases=self.user_biases,
                                  item_embeddings=self.item_embeddings, item_biases=self.item_biases,
                                  user_features=self.user_features_, item_features=self.item_features_,
                                  popularity=self.popularity, item_cache_size=self.cache_size,
                                  policy=self.policy, neighbors=self.neighbors, user_items=self.user_items)

    def _require_fitted(self) -> None:
        if self.user_space is None or self.user_embeddings is None or self.index is None:
            raise NotFittedError("the model is not fitted; call fit() or LFMRecommender.load() first")

    def clone(self) -> "LFMRecommender":
        """An independent copy ready to serve (arrays copied; no optimiser state: it serves, it does not train)."""
        arrays, meta = self.to_arrays()
        return type(self).from_arrays({name: array.copy() for name, array in arrays.items()}, meta)

    def set_policy(self, policy: ServingPolicy, built: dict | None = None) -> None:
        """Serve with ``policy`` from now on (the trainer sets what validation chose). When it asks for
        another item-item ranker than the one built (``policy.item_item``), that one is taken from ``built``
        (spec -> ItemNeighbors, rankers built earlier from the same training data) or built here from the
        training interactions (seconds per thousand items for "ridge": ItemNeighbors.ridge). Set before
        :meth:`fit`, the policy decides which ranker fit builds. Not for a model that is serving: the
        ranker and the policy change in two steps (the service serves loaded snapshots, never changed)."""
        if (self.neighbors is not None and self.user_items is not None
                and self.neighbors.spec != policy.item_item_spec):
            found = (built or {}).get(policy.item_item_spec)
            self.neighbors = found if found is not None else ItemNeighbors.for_policy(policy, self.user_items)
            if self.index is not None:
                self.index.neighbors = self.neighbors
        self.policy = policy
        if self.index is not None:
            self.index.policy = policy

    @property
    def ann_index(self):
        """The optional approximate index over known items (recommender.model.ann.AnnIndex), or None."""
        return self._ann_index

    @ann_index.setter
    def ann_index(self, ann) -> None:
        from .ann import ApproximateIndex

        self._require_fitted()
        self._ann_index = ann
        self._approximate = None if ann is None else ApproximateIndex(self.index, ann)

    @property
    def baseline(self) -> pd.Series | None:
        """Popularity of the known items at fit time (the baseline's scores), indexed by item id."""
        return None if self.popularity is None else self.popularity.series

    @property
    def cache_hits(self) -> int:
        """Item-row cache hits of the serving index (items scored through given features)."""
        return self.index.cache_hits if self.index is not None else 0

    @property
    def cache_misses(self) -> int:
        """Item-row cache misses of the serving index."""
        return self.index.cache_misses if self.index is not None else 0

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
                       item_features: ItemFeatures | PreparedItems | None = None, *,
                       use_baseline: bool = True, interactions: Mapping[str, float] | None = None,
                       policy: ServingPolicy | None = None) -> pd.Series:
        """Scores for one user over candidate items, whatever is known about either.

        ``item_ids=None`` means every known item plus every item in ``item_features``. Items that are
        unknown and have no features cannot be scored and are left out. ``user_features=None`` uses a
        known user's training-time features; ``{}`` means "no features" (the indicator alone). The
        Series (float32 scores indexed by item id) carries ``attrs``: ``strategy`` ("personalized",
        "features", "interactions" or "popular"), ``unscorable`` (item ids left out) and
        ``ignored_features`` (feature names not seen in training, with counts). ``interactions`` (item id
        -> weight > 0) are items the user interacted with that the model did not train on: they are used
        as :attr:`policy` says (fold-in and blends, see recommender.model.foldin; a blend's scores are
        not LightFM's). With the default policy a user without ``interactions`` gets LightFM's scores.
        ``policy`` replaces :attr:`policy` for this call (evaluating a candidate policy).

        Raises
        ------
        UnknownUserError
            Nothing usable is known about the user and ``use_baseline`` is False.
        ValueError
            Bad ids or feature weights.
        """
        self._require_fitted()
        result = self.index.predict_online(user_id, item_ids, user_features, item_features,
                                           use_baseline=use_baseline, interactions=interactions, policy=policy)
        return result.astype(np.float32)

    def rank(self, user_id: object, n: int = 10, *, user_features: Mapping[str, float] | None = None,
             item_features: ItemFeatures | PreparedItems | None = None, item_ids: Iterable[object] | None = None,
             exclude: Iterable[object] = (), use_baseline: bool = True, approximate: bool = False,
             filters: Sequence[Sequence[str]] = (), interactions: Mapping[str, float] | None = None,
             explore: tuple[float, int] | None = None) -> Ranking:
        """The best ``n`` items with how they were found (a :class:`Ranking`); see :meth:`recommend`.

        ``explore`` (rate, seed) fills each slot, with probability rate, with a random eligible item
        (reproducible from the seed); ``Ranking.explored`` lists those slots.
        """
        self._require_fitted()
        scorer = self._approximate if approximate and self._approximate is not None else self.index
        return scorer.recommend(user_id, n, user_features=user_features, item_features=item_features,
                                item_ids=item_ids, exclude=exclude, use_baseline=use_baseline, filters=filters,
                                interactions=interactions, explore=explore)

    def recommend(self, user_id: object, n: int = 10, *, user_features: Mapping[str, float] | None = None,
                  item_features: ItemFeatures | PreparedItems | None = None, item_ids: Iterable[object] | None = None,
                  exclude: Iterable[object] = (), use_baseline: bool = True,
                  approximate: bool = False, filters: Sequence[Sequence[str]] = (),
                  interactions: Mapping[str, float] | None = None) -> list[tuple[str, float]]:
        """The best ``n`` items as (item_id, score), best first, leaving out ``exclude``.

        ``filters`` restricts the candidates by their features: every group must hold, and a group holds
        when the item has any of its feature names (``[["genre:drama"], ["decade:1990s", "decade:2000s"]]``).
        ``interactions`` (item id -> weight > 0): what the user did that the model did not train on,
        folded in (see :meth:`predict_online`).
        Ties are broken by item id so that answers are deterministic. With ``approximate`` and an
        ``ann_index`` attached (see recommender.model.ann), known items come from the approximate index
        instead of scoring every one (new and changed items are still scored exactly); if too few
        remain after exclusions, the exact path answers. :meth:`rank` also says which strategy served.

        Raises
        ------
        ValueError
            ``n`` is not a non-negative integer; bad ids or feature weights.
        UnknownUserError
            Nothing usable is known about the user and ``use_baseline`` is False.
        """
        return self.rank(user_id, n, user_features=user_features, item_features=item_features,
                         item_ids=item_ids, exclude=exclude, use_baseline=use_baseline,
                         approximate=approximate, filters=filters, interactions=interactions).items

    def similar(self, item_id: object, n: int = 10, *, item_features: ItemFeatures | PreparedItems | None = None,
                exclude: Iterable[object] = (), filters: Sequence[Sequence[str]] = ()) -> list[tuple[str, float]]:
        """The ``n`` items nearest to ``item_id`` by cosine of their representations, as (item_id, cosine).

        Known items and new items given with features alike (see ScoringIndex.similar).

        Raises
        ------
        UnknownItemError
            The item is neither known nor given with usable features.
        """
        self._require_fitted()
        return self.index.similar(item_id, n, item_features=item_features, exclude=exclude, filters=filters).items

    def prepare_items(self, item_features: ItemFeatures) -> PreparedItems:
        """Precompute representations of items given with features, for repeated use across requests.

        Pass the result as ``item_features`` to :meth:`recommend` or :meth:`predict_online`: scoring
        then costs one matrix-vector product instead of a Python loop over the items.
        """
        self._require_fitted()
        return self.index.prepare_items(item_features)

    # ------------------------------------------------------------------ persistence

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """The model as (named arrays, JSON-able metadata): what :func:`save` writes and :meth:`from_arrays` reads."""
        self._require_fitted()
        arrays = {
            "user_embeddings": self.user_embeddings, "user_biases": self.user_biases,
            "item_embeddings": self.item_embeddings, "item_biases": self.item_biases,
            "baseline": self.popularity.scores,
            **(self.neighbors.to_arrays() if self.neighbors is not None else {}),
            **({"user_items_indices": self.user_items.indices, "user_items_indptr": self.user_items.indptr}
               if self.user_items is not None else {}),
        }
        for side in ("user", "item"):
            m = getattr(self, f"{side}_features_")
            arrays.update({f"{side}_features_data": m.data, f"{side}_features_indices": m.indices,
                           f"{side}_features_indptr": m.indptr,
                           f"{side}_features_shape": np.asarray(m.shape, dtype=np.int64)})
        random_state = self.initial_random_state
        meta = {
            "lightfm_params": {name: getattr(self, name) for name in LIGHTFM_PARAMS},
            "random_state": random_state if isinstance(random_state, int) else None,
            "indicators": self.indicators,
            "row_norm": self.row_norm,
            "user_ids": self.user_space.ids.tolist(),
            "item_ids": self.item_space.ids.tolist(),
            "user_feature_names": self.user_space.feature_names.tolist(),
            "item_feature_names": self.item_space.feature_names.tolist(),
            "policy": self.policy.to_dict(),
        }
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping) -> "LFMRecommender":
        """A model ready to serve from :meth:`to_arrays` output; ValueError when the arrays and the
        metadata disagree (shapes, NaN or inf parameters)."""
        indicators = meta["indicators"]
        model = cls(indicators=indicators, row_norm=meta["row_norm"], random_state=meta["random_state"],
                    **meta["lightfm_params"])
        users_on, items_on = INDICATORS[indicators]
        model.user_space = FeatureSpace(meta["user_ids"], meta["user_feature_names"], users_on, meta["row_norm"])
        model.item_space = FeatureSpace(meta["item_ids"], meta["item_feature_names"], items_on, meta["row_norm"])
        k = model.no_components
        for side in ("user", "item"):
            shape = tuple(int(x) for x in arrays[f"{side}_features_shape"])
            matrix = sp.csr_matrix((arrays[f"{side}_features_data"], arrays[f"{side}_features_indices"],
                                    arrays[f"{side}_features_indptr"]), shape=shape)
            space = getattr(model, f"{side}_space")
            emb, bias = arrays[f"{side}_embeddings"], arrays[f"{side}_biases"]
            expected = (space.n_ids, space.n_columns)
            if matrix.shape != expected or emb.shape != (space.n_columns, k) or bias.shape != (space.n_columns,):
                raise ValueError(f"{side} arrays do not match the metadata (features {matrix.shape} vs {expected}, "
                                 f"embeddings {emb.shape}, biases {bias.shape})")
            if not np.isfinite(emb).all() or not np.isfinite(bias).all():
                raise ValueError(f"{side} parameters contain NaN or inf")
            setattr(model, f"{side}_features_", matrix)
            setattr(model, f"{side}_embeddings", emb)
            setattr(model, f"{side}_biases", bias)
        if arrays["baseline"].shape != (model.item_space.n_ids,):
            raise ValueError("baseline length does not match the items")
        model.popularity = Popularity(model.item_space.ids, arrays["baseline"])
        model.policy = ServingPolicy.from_dict(meta.get("policy"))
        model.neighbors = ItemNeighbors.from_arrays(arrays, model.item_space.n_ids, model.policy.item_item_spec)
        if "user_items_indptr" in arrays:
            model.user_items = sp.csr_matrix((np.ones(len(arrays["user_items_indices"]), dtype=np.float32),
                                              arrays["user_items_indices"], arrays["user_items_indptr"]),
                                             shape=(model.user_space.n_ids, model.item_space.n_ids))
        model._reset_optimizer_state(placeholder=True)
        model._prepare_serving()
        return model

    def save(self, directory) -> None:
        """Write the model as arrays.npz + meta.json (no pickle); see recommender.model.artifacts."""
        artifacts.save_model(self, directory)

    @classmethod
    def load(cls, directory) -> "LFMRecommender":
        """Load a model written by :meth:`save`; raises ArtifactError on a damaged or foreign directory."""
        return artifacts.load_model(directory, cls)


def _binary(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A binary CSR of the given (row, column) pairs (repeats count once), indices sorted."""
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def positive_records(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray,
                     n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the records that count as positives, sorted codes ``row * n_items + col`` of negative pairs).

    ``rows`` and ``cols`` are aligned internal user and item indices. A record counts when its weight is
    > 0 and its (user, item) pair has no record of weight <= 0 (a negative signal vetoes the pair).
    """
    positive = weights > 0
    if positive.all():
        return positive, np.zeros(0, dtype=np.int64)
    codes = rows.astype(np.int64) * n_items + cols
    negative_pairs = np.unique(codes[~positive])
    return positive & ~np.isin(codes, negative_pairs), negative_pairs


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


def _log_ignored(side: str, ignored: Counter) -> None:
    if ignored:
        log.warning("%s feature names not seen in the first fit were ignored: %s", side,
                    dict(ignored.most_common(10)))


