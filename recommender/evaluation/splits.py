"""Splits of interaction data into training data and evaluation scenarios.

Three scenarios, each answered by one model trained on the train part of a split:

- ``warm``: known users, the last interactions of each user held out (:func:`temporal_split`);
- ``cold_users``: users the model never saw, scored through their features alone
  (:func:`cold_user_split`); candidates are the items the model knows;
- ``cold_items``: items the model never saw, scored through their features alone
  (:func:`cold_item_split`); known users rank the cold items only (see :class:`Scenario`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..features import normalize_id

SCENARIOS = ("warm", "cold_users", "cold_items")


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
    return _hold_out(interactions, user_features, "user_id", "item_id", frac, seed)


def cold_item_split(interactions: pd.DataFrame, item_features: pd.DataFrame | None, frac: float = 0.1,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``frac`` of the items, drawn among those with features: (train, test).

    Train has no interaction with the held-out items; test has all interactions with them except
    those of users who then have nothing left in train (they would be cold users as well).
    """
    return _hold_out(interactions, item_features, "item_id", "user_id", frac, seed)


def _hold_out(interactions: pd.DataFrame, features: pd.DataFrame | None, side: str, other: str, frac: float,
              seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``frac`` of the ids in column ``side``; test keeps only rows whose ``other`` id is in train."""
    frame = interactions.reset_index(drop=True)
    cold = _pick_held_out(frame[side], features, side, frac, seed)
    is_cold = frame[side].isin(cold).to_numpy()
    train, test = frame[~is_cold], frame[is_cold]
    test = test[test[other].isin(set(train[other]))]
    return train.reset_index(drop=True), test.reset_index(drop=True)


@dataclass
class Scenario:
    """One evaluation question: who is asked, what is ranked, and what they really interacted with.

    ``test`` holds the positives (any held-out interaction counts, whatever its weight). A user's
    items in ``train`` are excluded from its ranking. ``user_features`` (user id -> features) are
    passed at request time to the users that have an entry: that is how cold users are scored.
    ``item_features`` (item id -> features) are passed for items the model does not know: that is how
    cold items are scored. ``candidates`` are the items ranked; None means every item the model knows.
    ``interactions`` (user id -> item id -> weight) are passed to the users that have an entry as what
    they did that the model did not train on: that is how fresh users are scored (fold-in).

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
    interactions: Mapping[str, Mapping[str, float]] | None = None


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
