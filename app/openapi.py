"""The OpenAPI 3 document of the HTTP API (served at /openapi.json, used by the fuzz test)."""

from __future__ import annotations

# ids: 1-256 characters, no control characters, no surrounding whitespace, no "," or "/" (recommender.features)
ID = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": r"^[^\s,/\x00-\x1f\x7f]([^,/\x00-\x1f\x7f]*[^\s,/\x00-\x1f\x7f])?$"}
FILTER = {"name": "filter", "in": "query", "description": "keep items with this feature (repeatable: all must "
          "hold; a|b: either)", "schema": {"type": "array", "items": {"type": "string"}},
          "style": "form", "explode": True}
EXCLUDE = {"name": "exclude", "in": "query", "description": "comma-separated item ids to leave out",
           "schema": {"type": "string"}}
N = {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "Invalid input", 401: "Missing or wrong admin token", 403: "Admin endpoints disabled (no token set)",
            404: "Not found (unknown item, job or endpoint)", 413: "Body too large", 422: "Idempotency-Key already used for different records",
            503: "Redis or the model is unavailable; retry later"}
    return {str(c): _json(ERROR, text[c]) for c in codes}


ADMIN = [{"bearerAuth": []}]


def openapi_document() -> dict:
    """Build the document (a plain dict)."""
    features_body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
        "maxProperties": 1000,
        "example": {"genre:drama": 1.0, "tag:drama-1": 0.5}}}}}
    interaction = {"type": "object", "required": ["user_id", "item_id"], "properties": {
        "user_id": ID, "item_id": ID,
        "weight": {"type": "number", "minimum": -100, "maximum": 100,
                   "description": "default 1; weight <= 0 is a negative signal; |weight| <= MAX_WEIGHT (100)"},
        "recommendation_id": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                              "description": "the answer this interaction came from (attribution)"},
        "timestamp": {"type": "number", "description": "seconds since the epoch; default now"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "LightFM recommendation service", "version": "1.0.0",
                 "description": "Personalised recommendations for known, new and anonymous users."},
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Recommendation": {"type": "object", "required": ["user_id", "model_version", "strategy", "items"],
                                   "properties": {
                                       "user_id": {"type": "string", "nullable": True},
                                       "model_version": {"type": "string"},
                                       "strategy": {"type": "string", "enum": ["personalized", "features", "interactions",
                                                                                "session", "popular"]},
                                       "degraded": {"type": "boolean"},
                                       "recommendation_id": {"type": "string"},
                                       "variant": {"type": "string"},
                                       "items": {"type": "array", "items": {
                                           "type": "object", "required": ["item_id", "score"],
                                           "properties": {"item_id": {"type": "string"},
                                                          "score": {"type": "number"},
                                                          "explored": {"type": "boolean"}}}}}},
                "Interaction": interaction,
                "Job": {"type": "object", "required": ["job_id", "status"], "properties": {
                    "job_id": {"type": "string"},
                    "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
                    "version": {"type": "string"}, "metrics": {"type": "object"}, "error": {"type": "string"},
                    "decision": {"type": "string", "enum": ["accepted", "forced", "rejected"]},
                    "created_at": {"type": "number"}, "started_at": {"type": "number"},
                    "finished_at": {"type": "number"}, "heartbeat_at": {"type": "number"},
                    "force": {"type": "boolean"},
                    "progress": {"type": "string", "description": "the running job's stage (e.g. 'selection: "
                                 "row_norm=features epochs=10 ...', 'final model: epoch 3/30', 'publishing'); "
                                 "'done' once it succeeded; a failed job keeps the stage it failed in"}}},
            },
        },
        "paths": {
            "/recommend/{user_id}": {"get": {
                "summary": "Top-N items for a user",
                "parameters": [
                    {"name": "user_id", "in": "path", "required": True, "schema": ID}, N,
                    {"name": "exclude_seen", "in": "query", "schema": {"type": "boolean"},
                     "description": "leave out items the user interacted with (default true); items it gave "
                                    "weight <= 0 are always left out"},
                    {"name": "items", "in": "query", "description": "comma-separated candidate item ids",
                     "schema": {"type": "string"}},
                    EXCLUDE, FILTER,
                ],
                "responses": {"200": _json({"$ref": "#/components/schemas/Recommendation"}, "Recommendations"),
                              **_errors(400, 503)}}},
            "/recommend": {"post": {
                "summary": "Recommendations for a session's recent items (nothing is written)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["recent"], "additionalProperties": False, "properties": {
                        "recent": {"type": "array", "maxItems": 100, "items": {"oneOf": [
                            ID, {"type": "object", "required": ["item_id"], "additionalProperties": False,
                                 "properties": {"item_id": ID, "weight": {"type": "number", "minimum": 0, "exclusiveMinimum": True,
                                                                          "maximum": 100}}}]}},
                        "user_id": ID,
                        "features": {"type": "object", "additionalProperties": {"type": "number", "minimum": -100,
                                                                                "maximum": 100}},
                        "n": {"type": "integer", "minimum": 1, "maximum": 100},
                        "items": {"type": "array", "items": ID, "minItems": 1},
                        "exclude_seen": {"type": "boolean"},
                        "exclude": {"type": "array", "items": ID},
                        "filter": {"type": "array", "items": {"type": "string"}}},
                    "example": {"recent": ["i10", {"item_id": "i20", "weight": 2}], "n": 5}}}}},
                "responses": {"200": _json({"$ref": "#/components/schemas/Recommendation"}, "Recommendations"),
                              **_errors(400, 413, 503)}}},
            "/items/{item_id}/similar": {"get": {
                "summary": "Items nearest to an item in the model's representation (cosine)",
                "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": ID}, N, EXCLUDE,
                               FILTER],
                "responses": {"200": _json({"type": "object", "required": ["item_id", "items"]}, "Similar items"),
                              **_errors(400, 404, 503)}}},
            "/users/{user_id}": {
                "get": {"summary": "What the store holds about a user; whether the model knows it", "security": ADMIN,
                        "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": ID}],
                        "responses": {"200": _json({"type": "object"}, "User"), **_errors(400, 401, 403, 503)}},
                "delete": {"summary": "Erase a user: features, seen and negative items, its interactions",
                           "security": ADMIN,
                           "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": ID}],
                           "responses": {"200": _json({"type": "object"}, "What was erased"),
                                         **_errors(400, 401, 403, 503)}}},
            "/items/{item_id}": {
                "get": {"summary": "What the store holds about an item; whether the model knows it",
                        "security": ADMIN,
                        "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": ID}],
                        "responses": {"200": _json({"type": "object"}, "Item"), **_errors(400, 401, 403, 503)}},
                "delete": {"summary": "Take an item out of the catalogue", "security": ADMIN,
                           "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": ID}],
                           "responses": {"200": _json({"type": "object"}, "Removed"),
                                         **_errors(400, 401, 403, 503)}}},
            "/users/{user_id}/features": {"put": {
                "summary": "Replace a user's features", "security": ADMIN,
                "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": ID}],
                "requestBody": features_body,
                "responses": {"200": _json({"type": "object"}, "Written"), **_errors(400, 401, 403, 413, 503)}}},
            "/items/{item_id}/features": {"put": {
                "summary": "Replace an item's features and add it to the catalogue", "security": ADMIN,
                "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": ID}],
                "requestBody": features_body,
                "responses": {"200": _json({"type": "object"}, "Written"), **_errors(400, 401, 403, 413, 503)}}},
            "/interactions": {"post": {
                "summary": "Append interactions", "security": ADMIN,
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "description": "Repeat the same records with the same key (within "
                                               "IDEMPOTENCY_TTL) and nothing is written twice",
                                "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                                           "pattern": "^[!-~]+$"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Interaction"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Interaction"}, "minItems": 1}]}}}},
                "responses": {"200": _json({"type": "object", "required": ["written", "replayed"], "properties": {
                    "written": {"type": "integer"}, "replayed": {"type": "boolean"},
                    "attributed": {"type": "integer"},
                    "attribution": {"type": "array", "items": {"type": "object"}}}}, "Written (or replayed)"),
                              **_errors(400, 401, 403, 413, 422, 503)}}},
            "/retrain": {
                "post": {
                    "summary": "Queue a retrain job", "security": ADMIN,
                    "requestBody": {"required": False, "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"force": {"type": "boolean"}}}}}},
                    "responses": {"202": _json({"type": "object", "required": ["job_id"]}, "Queued"),
                                  **_errors(400, 401, 403, 503)}},
                "get": {
                    "summary": "The recent retrain jobs, newest first", "security": ADMIN,
                    "parameters": [{"name": "limit", "in": "query", "description": "how many jobs (default 20)",
                                    "schema": {"type": "integer", "minimum": 1, "maximum": 100}}],
                    "responses": {"200": _json({"type": "object", "required": ["jobs"], "properties": {
                        "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}}, "Jobs"),
                        **_errors(400, 401, 403, 503)}}},
            "/retrain/{job_id}": {"get": {
                "summary": "Status of a retrain job", "security": ADMIN,
                "parameters": [{"name": "job_id", "in": "path", "required": True,
                                "schema": {"type": "string", "maxLength": 64}}],
                "responses": {"200": _json({"$ref": "#/components/schemas/Job"}, "Job"),
                              **_errors(400, 401, 403, 404, 503)}}},
            "/stats": {"get": {
                "summary": "Impressions, attributed interactions and click-through rates over a window",
                "security": ADMIN,
                "parameters": [{"name": name, "in": "query", "schema": {"type": "number", "minimum": 0},
                                "description": f"seconds since the epoch (default: {default})"}
                               for name, default in (("since", "24 hours before until"), ("until", "now"))],
                "responses": {"200": _json({"type": "object", "required": ["impressions", "clicks"]}, "Stats"),
                              **_errors(400, 401, 403, 503)}}},
            "/model": {"get": {"summary": "The serving model",
                               "responses": {"200": _json({"type": "object"}, "Model"), **_errors(503)}}},
            "/health": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"}, "Alive")}}},
            "/ready": {"get": {"summary": "Readiness (model loaded and Redis answers)",
                               "responses": {"200": _json({"type": "object"}, "Ready"),
                                             "503": _json({"type": "object"}, "Not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")}}},
        },
    }
