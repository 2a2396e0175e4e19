"""Bench-only WSGI app: GET /recommend/<id> without Flask, around the real service.

NOT the service. ``bench/bench_http.py --tail N --reco-app bench.lean_app:app`` serves it in place of the
real app: the same ``RecommendationService.recommend`` (user cache, fold-in, blend, impression log) and the
same JSON and the same recommendations counter, but no Flask request context, routing, view argument
parsing, error handlers or request latency histogram (every other path, and a request whose ``n`` is not an
integer, goes to the real Flask app). What is left between it and the trivial endpoint is the
model and the service; what it gains over the real app is what a leaner HTTP layer could gain.

Run: gunicorn -c app/gunicorn_conf.py bench.lean_app:app (with the service's environment).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson

from app import create_app
from app.views import recommendation_body

flask_app = create_app()
service = flask_app.extensions["reco"]
PREFIX = "/recommend/"


def app(environ, start_response):
    """GET /recommend/<id>[?n=] straight to the service; anything else to Flask."""
    path = environ.get("PATH_INFO", "")
    if environ.get("REQUEST_METHOD") != "GET" or not path.startswith(PREFIX):
        return flask_app(environ, start_response)
    user_id = path[len(PREFIX):].encode("latin-1").decode("utf-8", "replace")  # WSGI strings are latin-1
    query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    try:
        n = int(query["n"]) if "n" in query else None
    except ValueError:
        return flask_app(environ, start_response)  # its 400
    answer = service.recommend(user_id, n)
    body = orjson.dumps(recommendation_body(answer, answer.user_id)) + b"\n"  # as the app's JSON provider
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


app.extensions = flask_app.extensions  # what gunicorn_conf's worker_exit stops (the impression writer's last flush)
