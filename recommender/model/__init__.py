"""The model: LightFM with id spaces (``LFMRecommender``), its scoring index, popularity, top-k, ANN, artifacts.

=================== ==========================================================================
module              owns
=================== ==========================================================================
``lightfm_model``   ``LFMRecommender``: fit, id spaces, parameters, ``predict_online``, persistence
``index``           ``ScoringIndex``: serving arrays, caches, the one scoring path, candidate filters
``popularity``      ``Popularity``: the baseline for users nothing usable is known about
``foldin``          ``ServingPolicy``: fold-in and blends per population; ``ItemNeighbors`` (co-occurrence)
``topk``            the one top-k rule (best first, ties by item id)
``ann``             ``AnnIndex`` (faiss HNSW) and ``ApproximateIndex``, a wrapper of the scoring index
``artifacts``       model directories: npz + JSON with checksums, atomic publication
=================== ==========================================================================
"""

from .foldin import FOLD_IN_METHODS, Blend, FoldIn, ItemNeighbors, ServingPolicy
from .index import (STRATEGY_FEATURES, STRATEGY_INTERACTIONS, STRATEGY_PERSONALIZED, STRATEGY_POPULAR, PreparedItems,
                    Ranking, ScoringIndex, UserQuery)
from .lightfm_model import INDICATORS, LIGHTFM_PARAMS, LOSSES, LFMRecommender
from .popularity import Popularity
from .topk import top_k, top_positions

__all__ = ["LFMRecommender", "ScoringIndex", "PreparedItems", "Ranking", "UserQuery", "Popularity", "top_k",
           "top_positions", "INDICATORS", "LIGHTFM_PARAMS", "LOSSES", "STRATEGY_PERSONALIZED",
           "STRATEGY_FEATURES", "STRATEGY_POPULAR", "STRATEGY_INTERACTIONS", "FoldIn", "ItemNeighbors",
           "FOLD_IN_METHODS", "Blend", "ServingPolicy"]
