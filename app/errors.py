"""API errors as JSON: one exception type for transport errors, one table for the domain's errors.

Every error leaves as ``{"error": {"code": ..., "message": ...}}`` with its status; no stack trace or
internal detail reaches a client.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from recommender.errors import (IdempotencyConflictError, InvalidInputError, LockedError, NoModelError, NotFittedError,
                                NotFoundError, RecommenderError, StoreUnavailableError, UnknownItemError,
                                UnknownUserError)

log = logging.getLogger(__name__)

#: domain error -> (HTTP status, headers, fixed message or None for the error's own); the code is the error's
DOMAIN_ERRORS: list[tuple[type[RecommenderError], int, dict, str | None]] = [
    (InvalidInputError, 400, {}, None),  # InvalidIdempotencyKeyError included (code invalid_header)
    (IdempotencyConflictError, 422, {}, None),
    (UnknownUserError, 404, {}, None),
    (UnknownItemError, 404, {}, None),
    (NotFoundError, 404, {}, None),
    (LockedError, 409, {}, None),
    (NoModelError, 503, {"Retry-After": "5"}, None),
    (NotFittedError, 503, {"Retry-After": "5"}, "no model is loaded yet"),
    (StoreUnavailableError, 503, {"Retry-After": "1"},
     "the feature store (Redis) is unavailable; nothing was written, retry later"),
]


class ApiError(Exception):
    """A transport error (authentication, a malformed request) with an HTTP status, a code and a message."""

    def __init__(self, status_code: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers or {}

    def to_dict(self) -> dict:
        """The JSON body: {"error": {"code": ..., "message": ...}}."""
        return {"error": {"code": self.code, "message": self.message}}


def _response(err: ApiError):
    response = jsonify(err.to_dict())
    response.status_code = err.status_code
    response.headers.update(err.headers)
    return response


def as_api_error(err: RecommenderError) -> ApiError:
    """The ApiError the table gives a domain error (500 for one it does not list)."""
    for kind, status, headers, message in DOMAIN_ERRORS:
        if isinstance(err, kind):
            return ApiError(status, err.code, message or str(err), dict(headers))
    log.error("unmapped domain error %s: %s", type(err).__name__, err)
    return ApiError(500, "internal_error", "internal error; it has been logged")


def register_error_handlers(app: Flask) -> None:
    """Map ApiError, the domain's errors, werkzeug's HTTP errors and anything else to JSON."""

    @app.errorhandler(ApiError)
    def _api(err: ApiError):
        return _response(err)

    @app.errorhandler(RecommenderError)
    def _domain(err: RecommenderError):
        return _response(as_api_error(err))

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):
        code = (err.name or "error").lower().replace(" ", "_")
        message = err.description or err.name
        if err.code == 413:
            message = f"request body too large (limit {app.config.get('MAX_CONTENT_LENGTH')} bytes)"
        elif err.code == 404:
            message = "no such endpoint"
        elif err.code == 405:
            message = "method not allowed on this endpoint"
        response = _response(ApiError(err.code or 500, code, message))
        if err.code == 405 and hasattr(err, "valid_methods") and err.valid_methods:
            response.headers["Allow"] = ", ".join(err.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _internal(err: Exception):
        log.exception("unhandled error")
        return _response(ApiError(500, "internal_error", "internal error; it has been logged"))
