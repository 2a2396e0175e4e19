"""Every domain error of the recommender package, in one module; app/errors.py maps each to an HTTP status.

Input errors subclass ValueError (library callers catch them as such); state errors say what is missing.
"""

from __future__ import annotations


class RecommenderError(Exception):
    """Base class of every error this package raises on purpose.

    ``code`` is a stable machine-readable name (the HTTP API's error code); subclasses set a default and
    a raiser may give a more precise one.
    """

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFittedError(RecommenderError, RuntimeError):
    """The model has not been fitted or loaded yet."""

    code = "no_model"


class NoModelError(RecommenderError):
    """The service has no model loaded yet (nothing published, or the first load is still running)."""

    code = "no_model"


class UnknownUserError(RecommenderError, KeyError):
    """Nothing is known about a user and the popularity baseline was not allowed."""

    code = "unknown_user"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown user"


class UnknownItemError(RecommenderError, KeyError):
    """An item is neither known to the model nor given with usable features."""

    code = "unknown_item"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown item"


class NotFoundError(RecommenderError, LookupError):
    """A named thing (a retrain job, an entity) does not exist."""

    code = "not_found"


class ArtifactError(RecommenderError, ValueError):
    """A model directory is missing, truncated, altered, or not one of ours."""

    code = "bad_artifact"


class ArtifactStoreUnavailableError(RecommenderError):
    """The artifact store (an S3-compatible object store) could not be reached, or refused the request.

    Unlike ArtifactError it says nothing about the version itself: the watcher retries it on its next
    round instead of skipping the version for good.
    """

    code = "artifact_store_unavailable"


class StoreUnavailableError(RecommenderError):
    """The feature store (Redis) could not be reached within its timeout, or refused the command."""

    code = "store_unavailable"


class LockedError(RecommenderError):
    """Another process holds the single-flight lock."""

    code = "locked"


class InvalidInputError(RecommenderError, ValueError):
    """An id, feature, weight, record or parameter is not acceptable; nothing was written."""

    code = "invalid_input"


class InvalidIdempotencyKeyError(InvalidInputError):
    """An idempotency key is not 1 to 255 printable ASCII characters."""

    code = "invalid_header"


class IdempotencyConflictError(RecommenderError, ValueError):
    """An idempotency key was used before for a different batch of interactions."""

    code = "idempotency_key_reused"
