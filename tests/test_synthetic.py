"""The synthetic worlds: deterministic, held-back users and items kept apart, the weak world's features weak.

How well models do on the default (weak) world is measured by bench/calibrate_world.py (docs/WORLD.md);
here only what generation itself guarantees, cheaply.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.synthetic import GENRES, WeakWorld, make_world


@pytest.fixture(scope="module")
def weak():
    return make_world(400, 800, seed=3)


@pytest.fixture(scope="module")
def strong():
    return make_world(400, 800, seed=3, feature_signal="strong")


def interest_lift(world, interests: dict[str, set[str]]) -> float:
    """Share of a user's interactions in the given genres, over the catalogue-wide share of those genres."""
    genre = world.interactions["item_id"].map(world.item_genre)
    overall = genre.value_counts(normalize=True)
    inside, expected = [], []
    for user, rows in genre.groupby(world.interactions["user_id"]):
        if user in interests:
            inside.append(rows.isin(interests[user]).mean())
            expected.append(sum(overall.get(g, 0.0) for g in interests[user]))
    return float(np.mean(inside) / np.mean(expected))


def stated_interests(world) -> dict[str, set[str]]:
    rows = world.user_features[world.user_features["feature"].str.startswith("interest:")]
    return rows.groupby("user_id")["feature"].agg(lambda s: {f.split(":", 1)[1] for f in s}).to_dict()


def test_same_arguments_same_world_and_another_seed_another():
    a, b = make_world(120, 90, seed=5), make_world(120, 90, seed=5)
    for name in ("interactions", "user_features", "item_features", "holdout"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert (a.new_users, a.new_items, a.user_interests, a.item_genre) == (
        b.new_users, b.new_items, b.user_interests, b.item_genre)
    assert not make_world(120, 90, seed=6).interactions.equals(a.interactions)


def test_weak_world_shape(weak):
    w = weak
    everything = pd.concat([w.interactions, w.holdout])
    assert set(everything.columns) == {"user_id", "item_id", "weight", "timestamp"}
    assert not everything.duplicated(["user_id", "item_id"]).any()
    assert set(everything["weight"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.2 < w.interactions["weight"].mean() < 3.9
    assert everything.groupby("user_id").size().min() >= 20  # MovieLens' floor, before new items are held back
    assert w.interactions["timestamp"].is_monotonic_increasing  # the log is in time order
    assert not everything.duplicated(["user_id", "timestamp"]).any()
    # 5% new users and items: features published, interactions only in the holdout
    assert len(w.new_users) == 20 and len(w.new_items) == 40
    new_u, new_i = set(w.new_users), set(w.new_items)
    assert not new_u & set(w.interactions["user_id"]) and not new_i & set(w.interactions["item_id"])
    assert (w.holdout["user_id"].isin(new_u) | w.holdout["item_id"].isin(new_i)).all()
    assert new_u <= set(w.user_features["user_id"]) and new_i <= set(w.item_features["item_id"])
    # every item has exactly one genre feature, the one item_genre names; every user an age band
    genres = w.item_features[w.item_features["feature"].str.startswith("genre:")]
    assert genres.groupby("item_id").size().eq(1).all()
    assert dict(zip(genres["item_id"], genres["feature"].str[6:])) == w.item_genre
    ages = w.user_features[w.user_features["feature"].str.startswith("age:")]
    assert ages["user_id"].nunique() == 400
    assert all(1 <= len(g) <= 2 and set(g) <= set(GENRES) for g in w.user_interests.values())


def test_weak_world_features_say_little_and_strong_world_much(weak, strong):
    """A stated interest lifts the share of that genre in a user's choices 1.5x in the weak world (its true
    favourite genres about 2x: user_interests mean something), 3.4x in the strong one."""
    assert 1.0 < interest_lift(weak, stated_interests(weak)) < 2.0
    assert interest_lift(weak, {u: set(g) for u, g in weak.user_interests.items()}) > 1.5
    assert interest_lift(strong, stated_interests(strong)) > 3.0


def test_knobs_and_arguments():
    base = make_world(100, 300, seed=1)
    assert len(make_world(100, 300, seed=1, mean_interactions=60).interactions) > 1.5 * len(base.interactions)
    flat = make_world(100, 300, seed=1, weak=WeakWorld(zipf=0.0, popularity_by_decade=0.0, popularity_by_cluster=0.0))
    top = lambda w: w.interactions["item_id"].value_counts().iloc[0]  # noqa: E731
    assert top(flat) < top(base)
    with pytest.raises(ValueError, match="feature_signal"):
        make_world(10, 10, feature_signal="medium")
    tiny = make_world(30, 20, seed=1)  # small catalogues still work: fewer interactions per user
    assert len(tiny.interactions) > 0 and tiny.interactions.groupby("user_id").size().max() <= 10


def test_truth_logits_explain_the_published_choices(weak, strong):
    truth = weak.truth
    assert strong.truth is None and truth is not None
    users = sorted(set(weak.interactions["user_id"]))[:200]
    logits = truth.logits(users)
    assert logits.shape == (200, 800) and np.isfinite(logits).all()
    column = {i: k for k, i in enumerate(truth.item_ids)}
    chosen = np.zeros_like(logits, dtype=bool)
    rows = {u: k for k, u in enumerate(users)}
    picked = weak.interactions[weak.interactions["user_id"].isin(rows)]
    chosen[picked["user_id"].map(rows).to_numpy(), picked["item_id"].map(column).to_numpy()] = True
    # per user, the chosen items' log-odds beat the others' (AUC of the truth on the published choices)
    aucs = []
    for k in range(len(users)):
        pos, neg = logits[k, chosen[k]], logits[k, ~chosen[k]]
        aucs.append((pos[:, None] > neg[None, :]).mean())
    assert np.mean(aucs) > 0.85, np.mean(aucs)
    # measured 0.92; popularity alone 0.73: taste explains what popularity does not
    pop_auc = np.mean([(truth.log_pop[chosen[k]][:, None] > truth.log_pop[~chosen[k]][None, :]).mean()
                       for k in range(len(users))])
    assert pop_auc < np.mean(aucs) - 0.1, (pop_auc, np.mean(aucs))
    with pytest.raises(KeyError):
        truth.logits(["nobody"])
