"""Domain errors of the recommender package; app/ maps them to HTTP statuses in one place."""

from __future__ import annotations


class RecommenderError(Exception):
    """Base class of every error this package raises on purpose."""


class NotFittedError(RecommenderError, RuntimeError):
    """The model has not been fitted or loaded yet."""


class UnknownUserError(RecommenderError, KeyError):
    """Nothing is known about a user and the popularity baseline was not allowed."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown user"


class ArtifactError(RecommenderError, ValueError):
    """A model directory is missing, truncated, altered, or not one of ours."""


class StoreUnavailableError(RecommenderError):
    """The feature store (Redis) could not be reached within its timeout."""


class LockedError(RecommenderError):
    """Another process holds the single-flight lock."""
