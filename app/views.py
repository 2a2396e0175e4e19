"""HTTP endpoints: parse and validate, call recommender/, serialise. No business logic here."""

from __future__ import annotations

import math
import os
import time

from flask import Blueprint, jsonify, request, url_for
from redis.exceptions import RedisError

from recommender.errors import StoreUnavailableError
from recommender.features import MAX_ID_LENGTH
from recommender.store import IdempotencyConflictError, InvalidIdempotencyKeyError
from recommender.training import get_job, submit_job

from . import metrics
from .auth import require_admin
from .errors import ApiError
from .openapi import openapi_document
from .services import services

api = Blueprint("api", __name__)
MAX_FEATURES_PER_ENTITY = 1000
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _check_id(value: str, name: str) -> str:
    if not value or len(value) > MAX_ID_LENGTH:
        raise ApiError(400, "invalid_id", f"{name} must be 1 to {MAX_ID_LENGTH} characters")
    return value


def _int_arg(args, name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer, got {raw[:50]!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool_arg(args, name: str, default: bool) -> bool:
    raw = args.get(name)
    if raw is None:
        return default
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise ApiError(400, "invalid_parameter", f"{name} must be true or false, got {raw[:50]!r}")


def _json_body():
    data = request.get_json(silent=True, force=True)
    if data is None:
        raise ApiError(400, "invalid_body", "the request body must be valid JSON")
    return data


def _features_body() -> dict:
    body = _json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object of feature name -> weight")
    if len(body) > MAX_FEATURES_PER_ENTITY:
        raise ApiError(400, "invalid_body", f"at most {MAX_FEATURES_PER_ENTITY} features per entity")
    for name, weight in body.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ApiError(400, "invalid_body", f"weight of feature {name[:100]!r} must be a finite number")
    return body


@api.get("/recommend/<path:user_id>")
def recommend(user_id: str):
    """Top-N items for a user; see the OpenAPI document for parameters."""
    svc = services()
    settings = svc.settings
    user_id = _check_id(user_id, "user_id")
    args = request.args  # one proxy lookup; each request.<attr> goes through a context variable
    n = _int_arg(args, "n", settings.default_n, 1, settings.max_n)
    exclude_seen = _bool_arg(args, "exclude_seen", True)
    items = None
    raw_items = args.get("items")
    if raw_items is not None:
        items = [i.strip() for i in raw_items.split(",") if i.strip()]
        if not items:
            raise ApiError(400, "invalid_parameter", "items must be a comma-separated list of item ids")
        if len(items) > settings.max_candidates:
            raise ApiError(400, "invalid_parameter", f"items may list at most {settings.max_candidates} ids")
        for item in items:
            _check_id(item, "each item id")
    snap = svc.holder.snapshot  # one snapshot for the whole request
    if snap is None:
        raise ApiError(503, "no_model", "no model is loaded yet; train one (POST /retrain) or wait",
                       {"Retry-After": "5"})
    degraded = False
    try:
        features, seen = svc.users.get_user(user_id)
    except StoreUnavailableError:
        # answer from the model alone: training-time features for known users, popularity otherwise
        features, seen, degraded = {}, set(), True
    info: dict = {}
    ranked = snap.model.recommend(user_id, n, user_features=features or None, item_features=snap.items,
                                  item_ids=items, exclude=seen if exclude_seen else (), info=info,
                                  approximate=True)  # used only when the model was published with an index
    metrics.child(metrics.RECOMMENDATIONS, info["strategy"], "true" if degraded else "false").inc()
    return jsonify({"user_id": user_id, "model_version": snap.version, "strategy": info["strategy"],
                    "degraded": degraded,
                    "items": [{"item_id": item, "score": round(score, 6)} for item, score in ranked]})


def _put_features(kind: str, entity_id: str, write) -> dict:
    """Shared body of the two feature PUTs: admin check, validation, one atomic write."""
    svc = services()
    require_admin(svc.settings.admin_token)
    entity_id = _check_id(entity_id, f"{kind}_id")
    features = _features_body()
    try:
        write(svc.store, entity_id, features)
    except ValueError as exc:
        raise ApiError(400, "invalid_body", str(exc)) from None
    return jsonify({f"{kind}_id": entity_id, "features": len(features)})


@api.put("/users/<path:user_id>/features")
def put_user_features(user_id: str):
    """Replace a user's features (admin)."""
    return _put_features("user", user_id, lambda store, i, f: store.set_user_features(i, f))


@api.put("/items/<path:item_id>/features")
def put_item_features(item_id: str):
    """Replace an item's features and add it to the catalogue (admin)."""
    return _put_features("item", item_id, lambda store, i, f: store.set_item_features(i, f))


@api.post("/interactions")
def post_interactions():
    """Append interactions to the training log and the users' seen sets (admin), exactly once per
    Idempotency-Key: a retry with the same key and records is answered from the first write."""
    svc = services()
    require_admin(svc.settings.admin_token)
    body = _json_body()
    records = [body] if isinstance(body, dict) else body
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise ApiError(400, "invalid_body", "the body must be an interaction object or a non-empty list of them")
    if len(records) > svc.settings.max_interactions_per_request:
        raise ApiError(400, "invalid_body",
                       f"at most {svc.settings.max_interactions_per_request} interactions per request")
    for r in records:
        for name in ("user_id", "item_id"):
            if not isinstance(r.get(name), (str, int)) or isinstance(r.get(name), bool):
                raise ApiError(400, "invalid_body", f"every interaction needs a string {name}")
    try:
        result = svc.store.add_interactions_once(records, idempotency_key=request.headers.get("Idempotency-Key"),
                                                 ttl=svc.settings.idempotency_ttl)
    except InvalidIdempotencyKeyError as exc:
        raise ApiError(400, "invalid_header", f"Idempotency-Key: {exc}") from None
    except IdempotencyConflictError as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, "invalid_body", str(exc)) from None
    response = jsonify({"written": result.written, "replayed": result.replayed})
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@api.post("/retrain")
def post_retrain():
    """Queue a retrain job (admin); 202 at once with its id."""
    svc = services()
    require_admin(svc.settings.admin_token)
    force = False
    if request.get_data():
        body = _json_body()
        if not isinstance(body, dict) or not isinstance(body.get("force", False), bool):
            raise ApiError(400, "invalid_body", 'the body, if any, must be {"force": true|false}')
        force = body.get("force", False)
    try:
        job_id, created = submit_job(svc.store, force=force, ttl=svc.settings.retrain_lock_ttl)
    except RedisError as exc:
        raise StoreUnavailableError(str(exc)) from exc
    response = jsonify({"job_id": job_id, "status": "queued" if created else "already_active",
                        "created": created})
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_retrain", job_id=job_id)
    return response


@api.get("/retrain/<job_id>")
def get_retrain(job_id: str):
    """Status of a retrain job (admin)."""
    svc = services()
    require_admin(svc.settings.admin_token)
    if len(job_id) > 64:
        raise ApiError(400, "invalid_id", "job ids are at most 64 characters")
    try:
        job = get_job(svc.store, job_id, lock_ttl=svc.settings.retrain_lock_ttl)
    except RedisError as exc:
        raise StoreUnavailableError(str(exc)) from exc
    if job is None:
        raise ApiError(404, "unknown_job", f"no retrain job {job_id!r}")
    return jsonify(job)


@api.get("/model")
def get_model():
    """The serving model: version, when trained, sizes and metrics."""
    svc = services()
    snap = svc.holder.snapshot
    if snap is None:
        raise ApiError(503, "no_model", "no model is loaded yet", {"Retry-After": "5"})
    extra = snap.meta.get("extra", {})
    return jsonify({"version": snap.version, "trained_at": extra.get("trained_at"), "loaded_at": snap.loaded_at,
                    "worker_pid": os.getpid(),
                    "users": snap.model.n_users, "items": snap.model.n_items,
                    "new_items_with_features": len(snap.items.extra_ids),
                    "params": {"indicators": snap.model.indicators, "row_norm": snap.model.row_norm,
                               **snap.meta.get("lightfm_params", {})},
                    "metrics": extra.get("metrics", {})})


@api.get("/health")
def health():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@api.get("/ready")
def ready():
    """Readiness: a model is loaded and Redis answers."""
    svc = services()
    snap = svc.holder.snapshot
    redis_ok = svc.store.ping()
    body = {"ready": bool(snap) and redis_ok, "model_loaded": snap is not None,
            "model_version": snap.version if snap else None, "redis": "ok" if redis_ok else "unavailable",
            "watcher_last_check_age_s": round(time.time() - svc.watcher.last_check, 3) if svc.watcher.last_check
            else None}
    if svc.holder.failed_versions:
        body["skipped_versions"] = sorted(svc.holder.failed_versions)
    response = jsonify(body)
    response.status_code = 200 if body["ready"] else 503
    return response


@api.get("/metrics")
def get_metrics():
    """Prometheus metrics."""
    return metrics.render()


@api.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document of this API."""
    return jsonify(openapi_document())
