"""API errors as JSON: one exception type, one place that maps everything to a status and a body."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from recommender.errors import LockedError, NotFittedError, StoreUnavailableError, UnknownUserError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human message."""

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


def register_error_handlers(app: Flask) -> None:
    """Every error leaves as JSON; no stack trace or internal detail reaches a client."""

    @app.errorhandler(ApiError)
    def _api(err: ApiError):
        return _response(err)

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

    @app.errorhandler(StoreUnavailableError)
    def _store(err):
        return _response(ApiError(503, "store_unavailable",
                                  "the feature store (Redis) is unavailable; nothing was written, retry later",
                                  {"Retry-After": "1"}))

    @app.errorhandler(NotFittedError)
    def _no_model(err):
        return _response(ApiError(503, "no_model", "no model is loaded yet", {"Retry-After": "5"}))

    @app.errorhandler(UnknownUserError)
    def _unknown(err):
        return _response(ApiError(404, "unknown_user", str(err)))

    @app.errorhandler(LockedError)
    def _locked(err):
        return _response(ApiError(409, "locked", str(err)))

    @app.errorhandler(Exception)
    def _internal(err: Exception):
        log.exception("unhandled error")
        return _response(ApiError(500, "internal_error", "internal error; it has been logged"))
