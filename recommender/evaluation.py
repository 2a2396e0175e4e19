"""Splits and ranking metrics for evaluating models against the popularity baseline.

Three scenarios, each answered by one model trained on the train part of a split:

- ``warm``: known users, the last interactions of each user held out (:func:`temporal_split`);
- ``cold_users``: users the model never saw, scored through their features alone
  (:func:`cold_user_split`); candidates are the items the model knows;
- ``cold_items``: items the model never saw, scored through their features alone
  (:func:`cold_item_split`); known users rank the cold items only (see :class:`Scenario`).

:func:`evaluate` computes precision, recall, NDCG and coverage at k, and per-user AUC, for the model and
for the popularity baseline side by side. The baseline is what the model itself serves to a user it
knows nothing about: item popularity for known items, and for new items the popularity quantile of their
feature-derived item bias (``LFMRecommender._baseline_from_bias``), since popularity cannot rank items
nobody has interacted with.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from .features import normalize_id

import numpy as np
import pandas as pd

BASELINE_PROBE_USER = "\x00baseline-probe\x00"  # an id no real user has: recommend() falls back to popularity
DEFAULT_KS = (5, 10)
SCENARIOS = ("warm", "cold_users", "cold_items")


# ---------------------------------------------------------------------- splits


def temporal_split(interactions: pd.DataFrame, test_fraction: float = 0.2,
                   min_interactions: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the last ``test_fraction`` of each user's interactions (by timestamp).

    Users with fewer than ``min_interactions`` stay wholly in train. Test rows whose item never
    occurs in train are dropped (a warm evaluation cannot rank them).
    """
    frame = interactions.reset_index(drop=True)
    order = frame.sort_values(["user_id", "timestamp"] if "timestamp" in frame else ["user_id"], kind="stable")
    rank_from_end = order.groupby("user_id").cumcount(ascending=False)
    counts = order.groupby("user_id")["user_id"].transform("size")
    n_test = np.ceil(counts * test_fraction).astype(int)
    is_test = (counts >= min_interactions) & (rank_from_end < n_test)
    test_idx = order.index[is_test.to_numpy()]
    train = frame.drop(index=test_idx)
    test = frame.loc[test_idx]
    test = test[test["item_id"].isin(set(train["item_id"]))]
    return train.reset_index(drop=True), test.reset_index(drop=True)


def _pick_held_out(ids: Iterable, with_features: pd.DataFrame | None, id_col: str, frac: float,
                   seed: int) -> set:
    """``frac`` of the distinct ``ids`` (rounded, at least 1), drawn among those that have features."""
    if not 0 < frac < 1:
        raise ValueError(f"frac must be in (0, 1), got {frac!r}")
    pool = sorted(set(ids))
    if with_features is not None:
        has = set(with_features[id_col].astype(str))
        eligible = [x for x in pool if str(x) in has]
    else:
        eligible = pool
    n = min(len(eligible), max(1, int(round(frac * len(pool)))))
    if n == 0 or n >= len(pool):
        raise ValueError(f"cannot hold out {frac:.0%} of {len(pool)} {id_col}s "
                         f"({len(eligible)} have features): nothing would be left on one side")
    rng = np.random.default_rng(seed)
    return set(rng.choice(np.asarray(eligible, dtype=object), size=n, replace=False).tolist())


def cold_user_split(interactions: pd.DataFrame, user_features: pd.DataFrame | None, frac: float = 0.1,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``frac`` of the users, drawn among those with features: (train, test).

    Train has no interaction of the held-out users; test has all of their interactions except those
    with items that never occur in train (no model can rank those among known items). A held-out
    user reaches the model only through its features.
    """
    frame = interactions.reset_index(drop=True)
    cold = _pick_held_out(frame["user_id"], user_features, "user_id", frac, seed)
    is_cold = frame["user_id"].isin(cold).to_numpy()
    train, test = frame[~is_cold], frame[is_cold]
    test = test[test["item_id"].isin(set(train["item_id"]))]
    return train.reset_index(drop=True), test.reset_index(drop=True)


def cold_item_split(interactions: pd.DataFrame, item_features: pd.DataFrame | None, frac: float = 0.1,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``frac`` of the items, drawn among those with features: (train, test).

    Train has no interaction with the held-out items; test has all interactions with them except
    those of users who then have nothing left in train (they would be cold users as well).
    """
    frame = interactions.reset_index(drop=True)
    cold = _pick_held_out(frame["item_id"], item_features, "item_id", frac, seed)
    is_cold = frame["item_id"].isin(cold).to_numpy()
    train, test = frame[~is_cold], frame[is_cold]
    test = test[test["user_id"].isin(set(train["user_id"]))]
    return train.reset_index(drop=True), test.reset_index(drop=True)


@dataclass
class Scenario:
    """One evaluation question: who is asked, what is ranked, and what they really interacted with.

    ``test`` holds the positives (any held-out interaction counts, whatever its weight). A user's
    items in ``train`` are excluded from its ranking. ``user_features`` (user id -> features) are
    passed at request time to the users that have an entry: that is how cold users are scored.
    ``item_features`` (item id -> features) are passed for items the model does not know: that is how
    cold items are scored. ``candidates`` are the items ranked; None means every item the model knows.

    For cold items the candidates are the cold items only: the question is whether the model orders
    new items by each user's taste, from their features. Mixed into the whole catalogue they would
    compete with known items whose scores carry an indicator embedding (a different question: how
    much exposure new items get), and a user's held-out interactions with known items would count as
    negatives.
    """

    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    user_features: Mapping[str, Mapping[str, float]] | None = None
    item_features: Mapping[str, Mapping[str, float]] | None = None
    candidates: Sequence[str] | None = None


@dataclass
class Split:
    """Training data and the scenarios a model trained on it is evaluated on."""

    train: pd.DataFrame
    user_features: pd.DataFrame | None
    item_features: pd.DataFrame | None
    scenarios: dict[str, Scenario] = field(default_factory=dict)

    def describe(self) -> dict:
        """Sizes: train interactions/users/items and per scenario test interactions/users/candidates."""
        out = {"train": {"interactions": len(self.train), "users": int(self.train["user_id"].nunique()),
                         "items": int(self.train["item_id"].nunique())}}
        for name, sc in self.scenarios.items():
            out[name] = {"interactions": len(sc.test), "users": int(sc.test["user_id"].nunique()),
                         "items": int(sc.test["item_id"].nunique()),
                         "candidates": None if sc.candidates is None else len(sc.candidates)}
        return out


def _str_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with user_id and item_id in the model's canonical string form (5 and "5" are one id)."""
    out = frame.copy()
    for col in ("user_id", "item_id"):
        out[col] = out[col].map(normalize_id)
    return out


def features_by_id(frame: pd.DataFrame | None, id_col: str, ids: Iterable) -> dict[str, dict[str, float]]:
    """{id: {feature: weight}} for the given ids (those without feature rows are left out)."""
    if frame is None or len(frame) == 0:
        return {}
    wanted = {normalize_id(i) for i in ids}
    keys = frame[id_col].map(normalize_id)
    mask = keys.isin(wanted).to_numpy()
    rows, keys = frame[mask], keys[mask]
    weights = rows["weight"] if "weight" in rows.columns else pd.Series(1.0, index=rows.index)
    out: dict[str, dict[str, float]] = {}
    for entity, name, weight in zip(keys, rows["feature"].astype(str), weights):
        feats = out.setdefault(entity, {})
        feats[name] = feats.get(name, 0.0) + float(weight)
    return out


def _scenarios(train: pd.DataFrame, warm_test: pd.DataFrame, cold_user_test: pd.DataFrame,
               cold_item_test: pd.DataFrame, user_features, item_features, cold_items) -> dict[str, Scenario]:
    """The three scenarios, with test rows restricted to what each one can rank."""
    train_users, train_items = set(train["user_id"]), set(train["item_id"])
    cold_user_test = cold_user_test[~cold_user_test["user_id"].isin(train_users)
                                    & cold_user_test["item_id"].isin(train_items)]
    cold_item_test = cold_item_test[cold_item_test["user_id"].isin(train_users)
                                    & ~cold_item_test["item_id"].isin(train_items)]
    ufeat = features_by_id(user_features, "user_id", cold_user_test["user_id"].unique())
    cold_user_test = cold_user_test[cold_user_test["user_id"].isin(set(ufeat))]
    ifeat = features_by_id(item_features, "item_id", cold_items)
    cold_item_test = cold_item_test[cold_item_test["item_id"].isin(set(ifeat))]
    return {
        "warm": Scenario("warm", train, warm_test.reset_index(drop=True)),
        "cold_users": Scenario("cold_users", train, cold_user_test.reset_index(drop=True), user_features=ufeat),
        "cold_items": Scenario("cold_items", train, cold_item_test.reset_index(drop=True), item_features=ifeat,
                               candidates=sorted(ifeat)),
    }


def holdout_split(interactions: pd.DataFrame, user_features: pd.DataFrame | None,
                  item_features: pd.DataFrame | None, *, cold_user_frac: float = 0.1, cold_item_frac: float = 0.1,
                  test_fraction: float = 0.2, min_interactions: int = 5, seed: int = 0) -> Split:
    """One split for all three scenarios, so that one trained model answers them all.

    Cold users are held out first (:func:`cold_user_split`), then cold items from what remains
    (:func:`cold_item_split`), then the last interactions of the remaining users
    (:func:`temporal_split`). Cold users' interactions with cold items are dropped (neither side is
    known); cold-item test rows are interactions of users in train.
    """
    interactions = _str_ids(interactions)
    rest, cold_user_test = cold_user_split(interactions, user_features, cold_user_frac, seed)
    rest, cold_item_test = cold_item_split(rest, item_features, cold_item_frac, seed + 1)
    train, warm_test = temporal_split(rest, test_fraction, min_interactions)
    cold_items = sorted(set(cold_item_test["item_id"]))
    scenarios = _scenarios(train, warm_test, cold_user_test, cold_item_test, user_features, item_features,
                           cold_items)
    return Split(train, user_features, item_features, scenarios)


def world_split(interactions: pd.DataFrame, user_features: pd.DataFrame, item_features: pd.DataFrame,
                holdout: pd.DataFrame, new_users: Iterable[str], new_items: Iterable[str], *,
                test_fraction: float = 0.2, min_interactions: int = 5) -> Split:
    """Split for a world that already keeps new users and items back (recommender.synthetic.World).

    Warm: :func:`temporal_split` of the published interactions. Cold users: the held-back
    interactions of ``new_users`` with known items. Cold items: the held-back interactions of known
    users with ``new_items``.
    """
    new_users, new_items = set(map(normalize_id, new_users)), set(map(normalize_id, new_items))
    interactions, holdout = _str_ids(interactions), _str_ids(holdout)
    train, warm_test = temporal_split(interactions, test_fraction, min_interactions)
    cold_user_test = holdout[holdout["user_id"].isin(new_users)]
    cold_item_test = holdout[holdout["item_id"].isin(new_items)]
    scenarios = _scenarios(train, warm_test, cold_user_test, cold_item_test, user_features, item_features,
                           sorted(new_items))
    return Split(train, user_features, item_features, scenarios)


# ---------------------------------------------------------------------- metrics


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best scores, best first; ties go to the earlier position."""
    k = min(int(k), len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < len(scores):
        cut = np.partition(-scores, k - 1)[k - 1]  # -(k-th best score)
        pool = np.flatnonzero(-scores <= cut)  # everything at least as good as the k-th, ties included
    else:
        pool = np.arange(len(scores))
    order = pool[np.argsort(-scores[pool], kind="stable")]
    return order[:k]


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
             seed: int = 0) -> dict:
    """Metrics of the model and of the popularity baseline on one scenario.

    Every user with at least one positive among its candidates is evaluated (at most ``max_users``,
    drawn with ``seed``). Scores come from ``model.predict_online`` (one vectorised call per user);
    the baseline's from ``predict_online`` for an unknown user without features. Returns::

        {"scenario", "users", "candidates", "positives", "model": {metric: mean}, "popularity": {...},
         "stderr": {"model": {metric: standard error over users}, "popularity": {...}},
         "strategies": {strategy: users}, "unscorable": candidates left out}

    Means are over users (coverage: distinct items in anyone's top-k / candidates). NaN when no user
    can be evaluated.
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
    truth = _positions_by_user(scenario.test, slot)
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
    top = max(ks)
    for user in users:
        keep = np.ones(len(candidates), dtype=bool)
        keep[seen.get(user, [])] = False
        kept = np.flatnonzero(keep)
        rel = np.zeros(len(candidates), dtype=bool)
        rel[relevant_by_user[user]] = True
        rel = rel[kept]
        n_pos += int(rel.sum())
        series = model.predict_online(user, user_features=user_features.get(user), item_features=prepared)
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


def precision_at_k(model, train: pd.DataFrame, test: pd.DataFrame, k: int = 10, *,
                   use_baseline_only: bool = False, max_users: int = 2000, seed: int = 0) -> float:
    """Mean precision@k over test users (at most ``max_users``), items seen in train excluded from ranking."""
    seen = train.groupby("user_id")["item_id"].agg(set).to_dict()
    truth = test.groupby("user_id")["item_id"].agg(set)
    users = truth.index.to_numpy()
    if len(users) > max_users:
        users = np.random.default_rng(seed).choice(users, size=max_users, replace=False)
    if len(users) == 0:
        return float("nan")
    hits = 0
    for user in users:
        ask = BASELINE_PROBE_USER if use_baseline_only else user
        top = model.recommend(ask, k, exclude=seen.get(user, ()))
        hits += len({i for i, _ in top} & truth[user])
    return hits / (k * len(users))
