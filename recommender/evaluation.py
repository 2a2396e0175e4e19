"""Splits and ranking metrics for evaluating models against the popularity baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd

BASELINE_PROBE_USER = "\x00baseline-probe\x00"  # an id no real user has: recommend() falls back to popularity


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
