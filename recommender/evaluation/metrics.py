"""Ranking metrics, computed one way for the retrain gate and the reports alike.

:func:`evaluate` computes precision, recall, NDCG and coverage at k, and per-user AUC, for the model and
for the popularity baseline side by side. The baseline is what the model itself serves to a user it
knows nothing about: item popularity for known items, and for new items the popularity quantile of their
feature-derived item bias (``Popularity.for_new_items``), since popularity cannot rank items nobody has
interacted with. The retrain gate and the trainer's selection (recommender.selection) use :func:`evaluate` too.
Rankings use the serving rule (recommender.model.topk: best first, ties by item id).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..features import normalize_id
from ..model.topk import top_k
from .splits import Scenario, Split

BASELINE_PROBE_USER = "\x00baseline-probe\x00"  # an id no real user has: the model serves it popularity
DEFAULT_KS = (5, 10)


def auc_score(scores: np.ndarray, relevant: np.ndarray) -> float:
    """P(a relevant candidate outscores an irrelevant one), ties counting one half; NaN if undefined."""
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    n_pos = int(relevant.sum())
    n_neg = len(relevant) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    negatives = np.sort(scores[~relevant])
    pos_scores = scores[relevant]
    below = np.searchsorted(negatives, pos_scores, side="left")
    tied = np.searchsorted(negatives, pos_scores, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (n_pos * n_neg))


def user_metrics(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
                 ranked: np.ndarray | None = None) -> dict[str, float]:
    """precision@k, recall@k and ndcg@k (binary relevance) for each k, and auc, for one user.

    ``scores`` and ``relevant`` are aligned over the user's candidates (excluded items already
    removed); ``ranked`` may pass ``top_k(scores, max(ks))`` when it is already known. precision@k
    divides by k, as is usual, even when fewer than k candidates exist. NDCG uses gains 1/log2(rank+1)
    and the ideal ordering of min(k, relevant) hits.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    n_rel = int(relevant.sum())
    out: dict[str, float] = {}
    if ranked is None:
        ranked = top_k(scores, max(ks))
    gains = relevant[ranked].astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, len(ranked) + 2))
    for k in ks:
        hits = gains[:k].sum()
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / n_rel if n_rel else float("nan")
        ideal = discounts[:min(k, n_rel)].sum()
        out[f"ndcg@{k}"] = float((gains[:k] * discounts[:k]).sum() / ideal) if ideal > 0 else float("nan")
    out["auc"] = auc_score(scores, relevant)
    return out


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """Column names of :func:`evaluate`'s metric dicts, in display order."""
    names = []
    for metric in ("precision", "recall", "ndcg"):
        names += [f"{metric}@{k}" for k in ks]
    names.append("auc")
    names += [f"coverage@{k}" for k in ks]
    return names


def evaluate(model, scenario: Scenario, k: Sequence[int] | int = DEFAULT_KS, *, max_users: int = 1000,
             seed: int = 0, policy=None) -> dict:
    """Metrics of the model and of the popularity baseline on one scenario.

    Every user with at least one positive among its candidates is evaluated (at most ``max_users``,
    drawn with ``seed``). Scores come from ``model.predict_online`` (one vectorised call per user);
    the baseline's from ``predict_online`` for an unknown user without features. Returns::

        {"scenario", "users", "candidates", "positives", "model": {metric: mean}, "popularity": {...},
         "stderr": {"model": {metric: standard error over users}, "popularity": {...}},
         "strategies": {strategy: users}, "unscorable": candidates left out}

    Means are over users (coverage: distinct items in anyone's top-k / candidates). NaN when no user
    can be evaluated. ``policy`` (a ServingPolicy) evaluates the model as if it served with that policy.
    """
    ks = (k,) if isinstance(k, (int, np.integer)) else tuple(int(x) for x in k)
    prepared = model.prepare_items(scenario.item_features) if scenario.item_features else None
    pop_series = model.predict_online(BASELINE_PROBE_USER, item_features=prepared)
    index = pop_series.index
    candidates = np.asarray(sorted({normalize_id(c) for c in scenario.candidates})
                            if scenario.candidates is not None else sorted(index), dtype=object)
    positions = index.get_indexer(candidates)  # sorted candidates: ties go to the smaller id, as in recommend()
    unscorable = int((positions < 0).sum())
    candidates, positions = candidates[positions >= 0], positions[positions >= 0]
    if len(candidates) == 0:  # e.g. a model without item features cannot score any cold item
        nan = {n: float("nan") for n in metric_names(ks)}
        return {"scenario": scenario.name, "users": 0, "candidates": 0, "positives": 0, "unscorable": unscorable,
                "strategies": {}, "model": dict(nan), "popularity": dict(nan),
                "stderr": {"model": dict(nan), "popularity": dict(nan)}}
    pop_scores = pop_series.to_numpy(np.float64)[positions]

    slot = {c: i for i, c in enumerate(candidates)}
    seen = _positions_by_user(scenario.train, slot)
    positives = scenario.test
    if "weight" in positives.columns:  # weight <= 0 is a negative signal, never something to find
        positives = positives[positives["weight"].to_numpy(dtype=np.float64) > 0]
    truth = _positions_by_user(positives, slot)
    relevant_by_user = {}
    for user, items in truth.items():
        rel = np.setdiff1d(items, seen.get(user, ()))
        if len(rel):
            relevant_by_user[user] = rel
    users = np.asarray(sorted(relevant_by_user), dtype=object)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))

    names = [n for n in metric_names(ks) if not n.startswith("coverage")]
    values = {who: {n: [] for n in names} for who in ("model", "popularity")}
    shown = {who: {k_: np.zeros(len(candidates), dtype=bool) for k_ in ks} for who in ("model", "popularity")}
    strategies: Counter = Counter()
    n_pos = 0
    user_features = scenario.user_features or {}
    interactions = scenario.interactions or {}
    extra = {} if policy is None else {"policy": policy}
    top = max(ks)
    for user in users:
        keep = np.ones(len(candidates), dtype=bool)
        keep[seen.get(user, [])] = False
        kept = np.flatnonzero(keep)
        rel = np.zeros(len(candidates), dtype=bool)
        rel[relevant_by_user[user]] = True
        rel = rel[kept]
        n_pos += int(rel.sum())
        if user in interactions:
            extra["interactions"] = interactions[user]
        series = model.predict_online(user, user_features=user_features.get(user), item_features=prepared, **extra)
        extra.pop("interactions", None)
        strategies[series.attrs.get("strategy")] += 1
        model_scores = series.to_numpy(np.float64)[positions]
        for who, scores in (("model", model_scores), ("popularity", pop_scores)):
            s = scores[kept]
            ranked = top_k(s, top)
            for name, value in user_metrics(s, rel, ks, ranked).items():
                values[who][name].append(value)
            for k_ in ks:
                shown[who][k_][kept[ranked[:k_]]] = True

    result = {"scenario": scenario.name, "users": int(len(users)), "candidates": int(len(candidates)),
              "positives": n_pos, "unscorable": unscorable, "strategies": dict(strategies), "stderr": {}}
    for who in ("model", "popularity"):
        table = {n: _mean(v) for n, v in values[who].items()}
        result["stderr"][who] = {n: _stderr(v) for n, v in values[who].items()}
        for k_ in ks:
            table[f"coverage@{k_}"] = float(shown[who][k_].mean()) if len(users) else float("nan")
        result[who] = {n: table[n] for n in metric_names(ks)}
    return result


def _mean(values: list[float]) -> float:
    """Mean ignoring NaN (users for whom a metric is undefined); NaN when nothing is left."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if len(arr) else float("nan")


def _stderr(values: list[float]) -> float:
    """Standard error of the mean over users (NaN ignored; NaN with fewer than two values)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else float("nan")


def _positions_by_user(frame: pd.DataFrame, slot: Mapping[str, int]) -> dict[str, np.ndarray]:
    """{user id: sorted candidate positions of the user's items in ``frame``} (non-candidates dropped)."""
    if len(frame) == 0:
        return {}
    pos = frame["item_id"].map(normalize_id).map(slot)
    ok = pos.notna().to_numpy()
    users = frame["user_id"].map(normalize_id).to_numpy(dtype=object)[ok]
    pos = pos.to_numpy()[ok].astype(np.int64)
    if len(pos) == 0:
        return {}
    groups = pd.Series(pos).groupby(users).indices
    return {user: np.unique(pos[idx]) for user, idx in groups.items()}


def evaluate_split(model, split: Split, k: Sequence[int] | int = DEFAULT_KS, *, max_users: int = 1000,
                   seed: int = 0, scenarios: Iterable[str] | None = None) -> dict[str, dict]:
    """:func:`evaluate` on every scenario of the split (or the named ones)."""
    names = list(split.scenarios) if scenarios is None else list(scenarios)
    return {name: evaluate(model, split.scenarios[name], k, max_users=max_users, seed=seed) for name in names}
