"""Admin token check: bearer token, compared in constant time, never logged."""

from __future__ import annotations

import hmac

from flask import request

from .errors import ApiError


def require_admin(token: str | None) -> None:
    """Raise ApiError 403 when no token is configured, 401 when the request's token is missing or wrong."""
    if not token:
        raise ApiError(403, "admin_disabled", "admin endpoints are disabled: the server has no ADMIN_TOKEN configured")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest on bytes of both: its time does not depend on where the strings differ
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "missing or invalid admin token (Authorization: Bearer <ADMIN_TOKEN>)",
                       {"WWW-Authenticate": "Bearer"})
