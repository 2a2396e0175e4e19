"""LightFM-based recommender: model, feature store, artifacts, serving and training (no Flask here)."""

from .errors import ArtifactError, NotFittedError, RecommenderError, UnknownUserError
from .model import LFMRecommender

__all__ = ["LFMRecommender", "ArtifactError", "NotFittedError", "RecommenderError", "UnknownUserError"]
