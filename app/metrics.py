"""Prometheus metrics; in gunicorn they are aggregated across workers (multiprocess mode)."""

from __future__ import annotations

import os
import time

from flask import Flask, Response, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

REQUEST_LATENCY = Histogram("reco_http_request_duration_seconds", "HTTP request latency",
                            ["endpoint", "method", "status"], buckets=BUCKETS)
RECOMMENDATIONS = Counter("reco_recommendations_total", "Recommendations served", ["strategy", "degraded"])
USER_CACHE = Counter("reco_user_cache_lookups_total", "User record lookups on the request path by result "
                     "(hit, miss, or bypass while Redis invalidations are not being received)", ["result"])
RESULT_CACHE = Counter("reco_result_cache_lookups_total", "Answers RESULT_CACHE could keep, by whether the "
                       "ranking came from the user's cache entry (hit) or was computed (miss)", ["result"])
MODEL_INFO = Gauge("reco_model_info", "1 for the model version a process serves", ["version"],
                   multiprocess_mode="liveall")
MODEL_SWAPS = Counter("reco_model_swaps_total", "Model snapshots swapped in (new versions and item refreshes)")
CACHE_HITS = Gauge("reco_item_cache_hits", "Item representation cache hits of the serving model",
                   multiprocess_mode="livesum")
CACHE_MISSES = Gauge("reco_item_cache_misses", "Item representation cache misses of the serving model",
                     multiprocess_mode="livesum")
IMPRESSIONS = Counter("reco_impressions_total", "Items shown in answers", ["strategy", "variant"])
EXPLORED = Counter("reco_explored_slots_total", "Answer slots filled at random (exploration)", ["variant"])
ATTRIBUTED = Counter("reco_attributed_interactions_total", "Interactions attributed to an answer's position",
                     ["strategy", "variant", "explored"])
RETRAIN_SECONDS = Histogram("reco_retrain_duration_seconds", "Duration of retrain runs", ["outcome"],
                            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))


_children: dict = {}
_STARTED = "reco.started"  # WSGI environ key: when the request reached the app (perf_counter)


def child(metric, *labels):
    """metric.labels(*labels), memoised: labels() takes a lock and builds a key on every call."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def observe_snapshot(previous_version: str | None, version: str, model) -> None:
    """Record a swap: the version gauge, the swap counter and the model's cache statistics."""
    if previous_version and previous_version != version:
        MODEL_INFO.labels(version=previous_version).set(0)
    MODEL_INFO.labels(version=version).set(1)
    MODEL_SWAPS.inc()
    CACHE_HITS.set(model.cache_hits)
    CACHE_MISSES.set(model.cache_misses)


def hooks():
    """The service's callbacks that feed these metrics (user reads, swaps, retrains)."""
    from recommender.service import Hooks

    previous: dict = {"version": None}

    def on_swap(snapshot) -> None:
        observe_snapshot(previous["version"], snapshot.version, snapshot.model)
        previous["version"] = snapshot.version

    def on_answer(answer) -> None:
        child(IMPRESSIONS, answer.strategy, answer.variant).inc(len(answer.items))
        if answer.explored:
            child(EXPLORED, answer.variant).inc(len(answer.explored))

    def on_attribution(found) -> None:
        child(ATTRIBUTED, found.strategy or "", found.variant or "", "true" if found.explored else "false").inc()

    return Hooks(on_user_lookup=lambda result: child(USER_CACHE, result).inc(), on_swap=on_swap,
                 on_retrain=lambda seconds, outcome: RETRAIN_SECONDS.labels(outcome).observe(seconds),
                 on_answer=on_answer, on_attribution=on_attribution,
                 on_result_cache=lambda result: child(RESULT_CACHE, result).inc())


def init_app(app: Flask) -> None:
    """Time every request by route template (not raw path, which would explode label cardinality).

    The clock starts in a thin WSGI wrapper (before Flask builds its request context, so that cost is
    counted too) and stops in one after_request hook: no before_request hook, no ``g``.
    """
    flask_wsgi = app.wsgi_app

    def timed_wsgi(environ, start_response):
        environ[_STARTED] = time.perf_counter()
        return flask_wsgi(environ, start_response)

    app.wsgi_app = timed_wsgi

    @app.after_request
    def _observe(response):
        req = request._get_current_object()  # one context lookup instead of one per attribute
        started = req.environ.get(_STARTED)
        if started is not None:
            rule = req.url_rule.rule if req.url_rule else "unmatched"
            child(REQUEST_LATENCY, rule, req.method, str(response.status_code)).observe(time.perf_counter() - started)
        return response


def render() -> Response:
    """The Prometheus text exposition for this process, or for all gunicorn workers together."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest(REGISTRY)
    return Response(data, content_type=CONTENT_TYPE_LATEST)  # as is: a mimetype would get a second charset
