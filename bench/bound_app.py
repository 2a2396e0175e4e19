"""Bench-only WSGI app: the real service with GET /recommend's user read and model answer memoised.

NOT the service. bench/bench_http.py --bounds serves it next to the real app: a user's record is
read from Redis once per process and the model's answer computed once per (model, user, n), leaving
Flask routing, parameter parsing, metrics and JSON of the real endpoint. The gap between it and the
trivial endpoint is what the framework around the model costs.

Run: gunicorn -c app/gunicorn_conf.py bench.bound_app:app (with the service's environment).
"""

from __future__ import annotations

from app import create_app
from recommender.model import LFMRecommender

app = create_app()
_users_source = app.extensions["reco"].users  # the user cache, or the store with USER_CACHE_SIZE=0
_real_get_user = _users_source.get_user
_users: dict = {}
_real_rank = LFMRecommender.rank
_answers: dict = {}


def _memo_get_user(user_id: str):
    """get_user, once per user per process."""
    hit = _users.get(user_id)
    if hit is None:
        hit = _users[user_id] = _real_get_user(user_id)
    return hit


def _memo_rank(self, user_id, n=10, **kwargs):
    """rank(), once per (model, user, n) per process."""
    key = (id(self), user_id, n)
    hit = _answers.get(key)
    if hit is None:
        hit = _answers[key] = _real_rank(self, user_id, n, **kwargs)
    return hit


_users_source.get_user = _memo_get_user
LFMRecommender.rank = _memo_rank
