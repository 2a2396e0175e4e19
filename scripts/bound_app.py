"""Bench-only WSGI app: the real service with parts of GET /recommend memoised per process.

NOT the service. scripts/bench_http.py --bounds serves it next to the real app to show how much of the
gap to the trivial endpoint each part of a request accounts for:

- ``BOUND=store``: a user's features and seen items are read from Redis once per process, then reused
  (what a perfect client-side cache of user records would give);
- ``BOUND=all``: the model's answer is memoised too, leaving Flask routing, parameter parsing,
  metrics and JSON of the real endpoint.

Run: gunicorn -c app/gunicorn_conf.py scripts.bound_app:app (with the service's environment).
"""

from __future__ import annotations

import os

from app import create_app
from recommender.model import LFMRecommender

BOUND = os.environ.get("BOUND", "all")
if BOUND not in ("store", "all"):
    raise SystemExit(f"BOUND must be 'store' or 'all', got {BOUND!r}")

app = create_app()
_store = app.extensions["reco"].store
_real_get_user = _store.get_user
_users: dict = {}


def _memo_get_user(user_id: str):
    """get_user, once per user per process."""
    hit = _users.get(user_id)
    if hit is None:
        hit = _users[user_id] = _real_get_user(user_id)
    return hit


_store.get_user = _memo_get_user

if BOUND == "all":
    _real_recommend = LFMRecommender.recommend
    _answers: dict = {}

    def _memo_recommend(self, user_id, n=10, *, info=None, **kwargs):
        """recommend(), once per (model, user, n) per process."""
        key = (id(self), user_id, n)
        hit = _answers.get(key)
        if hit is None:
            details: dict = {}
            hit = _answers[key] = (_real_recommend(self, user_id, n, info=details, **kwargs), details)
        if info is not None:
            info.update(hit[1])
        return hit[0]

    LFMRecommender.recommend = _memo_recommend
