"""HTTP endpoints: parse the request, call one RecommendationService method, serialise the answer."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request, url_for

from recommender.service import RecommendationService
from recommender.settings import parse_bool

from . import metrics
from .auth import require_admin
from .errors import ApiError
from .openapi import openapi_document

api = Blueprint("api", __name__)


def service() -> RecommendationService:
    """This process's service (created once by the app factory)."""
    return current_app.extensions["reco"]


def _int_arg(args, name: str) -> int | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer, got {raw[:50]!r}") from None


def _bool_arg(args, name: str, default: bool) -> bool:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        return parse_bool(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be true or false, got {raw[:50]!r}") from None


def _json_body():
    data = request.get_json(silent=True, force=True)
    if data is None:
        raise ApiError(400, "invalid_body", "the request body must be valid JSON")
    return data


def _features_body() -> dict:
    body = _json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object of feature name -> weight")
    return body


def _admin(svc: RecommendationService) -> None:
    require_admin(svc.settings.admin_token)


def recommendation_body(answer, user_id) -> dict:
    """The JSON object of an answer (GET and POST /recommend alike; explored slots are marked per item),
    counted in the recommendations metric."""
    metrics.child(metrics.RECOMMENDATIONS, answer.strategy, "true" if answer.degraded else "false").inc()
    explored = set(answer.explored)
    items = [{"item_id": item, "score": round(score, 6)} for item, score in answer.items]
    for slot in explored:
        items[slot]["explored"] = True
    return {"user_id": user_id, "recommendation_id": answer.recommendation_id,
            "model_version": answer.model_version, "variant": answer.variant, "strategy": answer.strategy,
            "degraded": answer.degraded, "items": items}


def _recommendation(answer, user_id):
    """The JSON response of an answer."""
    return jsonify(recommendation_body(answer, user_id))


def _id_list(args, name: str) -> list[str] | None:
    """A comma-separated query parameter as a list (None when absent)."""
    raw = args.get(name)
    return None if raw is None else [i.strip() for i in raw.split(",") if i.strip()]


def _filters(args) -> list[list[str]]:
    """``filter=a|b`` parameters (repeatable): every one must hold; a|b holds when an item has a or b."""
    return [[name.strip() for name in raw.split("|")] for raw in args.getlist("filter")]


@api.get("/recommend/<path:user_id>")
def recommend(user_id: str):
    """Top-N items for a user; see the OpenAPI document for parameters."""
    svc = service()
    args = request.args  # one proxy lookup; each request.<attr> goes through a context variable
    answer = svc.recommend(user_id, _int_arg(args, "n"), items=_id_list(args, "items"),
                           exclude_seen=_bool_arg(args, "exclude_seen", True),
                           exclude=_id_list(args, "exclude") or (), filters=_filters(args))
    return _recommendation(answer, answer.user_id)


@api.post("/recommend")
def recommend_session():
    """Recommendations for a session's recent items (no token; nothing is written)."""
    body = _json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object with a 'recent' list")
    unknown = set(body) - SESSION_FIELDS
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown field(s) {sorted(unknown)[:5]}; allowed: {sorted(SESSION_FIELDS)}")
    recent = body.get("recent")
    if not isinstance(recent, list):
        raise ApiError(400, "invalid_body", "recent must be a list of item ids or {item_id, weight} objects")
    entries = []
    for entry in recent:
        if isinstance(entry, dict):
            if set(entry) - {"item_id", "weight"} or "item_id" not in entry:
                raise ApiError(400, "invalid_body", "each recent object is {\"item_id\": ..., \"weight\": ...}")
            item, weight = entry["item_id"], entry.get("weight", 1.0)
        else:
            item, weight = entry, 1.0
        if not isinstance(item, str):
            raise ApiError(400, "invalid_body", "item ids in recent must be strings")
        entries.append((item, weight))
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
        raise ApiError(400, "invalid_body", "n must be an integer")
    exclude_seen = body.get("exclude_seen", True)
    if not isinstance(exclude_seen, bool):
        raise ApiError(400, "invalid_body", "exclude_seen must be true or false")
    features = body.get("features")
    if features is not None and not isinstance(features, dict):
        raise ApiError(400, "invalid_body", "features must be an object of feature name -> weight")
    user_id = body.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise ApiError(400, "invalid_body", "user_id must be a string")
    answer = service().recommend_session(entries, n, user_id=user_id, features=features,
                                         items=_string_list(body, "items", None),
                                         exclude_seen=exclude_seen, exclude=_string_list(body, "exclude", ()),
                                         filters=[[name.strip() for name in f.split("|")]
                                                  for f in _string_list(body, "filter", ())])
    return _recommendation(answer, user_id)


SESSION_FIELDS = {"user_id", "recent", "features", "n", "items", "exclude_seen", "exclude", "filter"}


def _string_list(body: dict, name: str, default):
    """A JSON list of strings from the body (``default`` when absent); 400 otherwise."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "invalid_body", f"{name} must be a list of strings")
    return value


@api.get("/items/<path:item_id>/similar")
def similar_items(item_id: str):
    """The items nearest to an item in the model's item representation (cosine)."""
    args = request.args
    version, known, items = service().similar_items(item_id, _int_arg(args, "n"),
                                                    exclude=_id_list(args, "exclude") or (), filters=_filters(args))
    return jsonify({"item_id": item_id, "model_version": version, "known_to_model": known,
                    "items": [{"item_id": item, "score": round(score, 6)} for item, score in items]})


@api.get("/users/<path:user_id>")
def get_user(user_id: str):
    """What the store holds about a user, and whether the model knows it (admin)."""
    svc = service()
    _admin(svc)
    return jsonify(svc.user_info(user_id))


@api.delete("/users/<path:user_id>")
def delete_user(user_id: str):
    """Erase a user: features, seen and negative items, its interactions in the log (admin)."""
    svc = service()
    _admin(svc)
    return jsonify(svc.erase_user(user_id))


@api.get("/items/<path:item_id>")
def get_item(item_id: str):
    """What the store holds about an item, and whether the model knows it (admin)."""
    svc = service()
    _admin(svc)
    return jsonify(svc.item_info(item_id))


@api.delete("/items/<path:item_id>")
def delete_item(item_id: str):
    """Take an item out of the catalogue (admin)."""
    svc = service()
    _admin(svc)
    return jsonify(svc.delete_item(item_id))


@api.put("/users/<path:user_id>/features")
def put_user_features(user_id: str):
    """Replace a user's features (admin)."""
    return _put_features("user", user_id)


@api.put("/items/<path:item_id>/features")
def put_item_features(item_id: str):
    """Replace an item's features and add it to the catalogue (admin)."""
    return _put_features("item", item_id)


def _put_features(kind: str, entity_id: str):
    svc = service()
    _admin(svc)
    write = svc.set_user_features if kind == "user" else svc.set_item_features
    return jsonify({f"{kind}_id": entity_id, "features": write(entity_id, _features_body())})


@api.post("/interactions")
def post_interactions():
    """Append interactions to the training log and the users' seen sets (admin), exactly once per
    Idempotency-Key: a retry with the same key and records is answered from the first write."""
    svc = service()
    _admin(svc)
    body = _json_body()
    records = [body] if isinstance(body, dict) else body
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise ApiError(400, "invalid_body", "the body must be an interaction object or a non-empty list of them")
    for r in records:
        for name in ("user_id", "item_id"):
            if not isinstance(r.get(name), (str, int)) or isinstance(r.get(name), bool):
                raise ApiError(400, "invalid_body", f"every interaction needs a string {name}")
    result = svc.add_interactions(records, request.headers.get("Idempotency-Key"))
    body = {"written": result.written, "replayed": result.replayed}
    if result.attribution:
        body["attributed"] = sum(a.status == "attributed" for a in result.attribution.values())
        body["attribution"] = [{"index": n, "status": a.status,
                                **({"position": a.position, "explored": a.explored} if a.position else {})}
                               for n, a in result.attribution.items()]
    response = jsonify(body)
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@api.post("/retrain")
def post_retrain():
    """Queue a retrain job (admin); 202 at once with its id."""
    svc = service()
    _admin(svc)
    force = False
    if request.get_data():
        body = _json_body()
        if not isinstance(body, dict) or not isinstance(body.get("force", False), bool):
            raise ApiError(400, "invalid_body", 'the body, if any, must be {"force": true|false}')
        force = body.get("force", False)
    job_id, created = svc.submit_retrain(force)
    response = jsonify({"job_id": job_id, "status": "queued" if created else "already_active",
                        "created": created})
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_retrain", job_id=job_id)
    return response


@api.get("/retrain")
def list_retrains():
    """The recent retrain jobs, newest first (admin); ``limit`` (1-100, default 20)."""
    svc = service()
    _admin(svc)
    return jsonify({"jobs": svc.recent_retrains(_int_arg(request.args, "limit"))})


@api.get("/retrain/<job_id>")
def get_retrain(job_id: str):
    """Status of a retrain job (admin)."""
    svc = service()
    _admin(svc)
    return jsonify(svc.retrain_job(job_id))


@api.get("/stats")
def get_stats():
    """Impressions, attributed interactions and click-through rates over a time window (admin)."""
    svc = service()
    _admin(svc)
    return jsonify(svc.stats(_float_arg(request.args, "since"), _float_arg(request.args, "until")))


def _float_arg(args, name: str) -> float | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be seconds since the epoch, got {raw[:50]!r}") from None
    if not 0 <= value < 1e11:
        raise ApiError(400, "invalid_parameter", f"{name} must be seconds since the epoch, got {raw[:50]!r}")
    return value


@api.get("/model")
def get_model():
    """The serving model: version, when trained, sizes and metrics."""
    return jsonify(service().model_info())


@api.get("/health")
def health():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@api.get("/ready")
def ready():
    """Readiness: a model is loaded and Redis answers (503 with the reason otherwise)."""
    body = service().readiness()
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
