"""Evaluation: metrics on hand-computed cases, splits without leakage, and the model beating popularity."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recommender.evaluation import (
    BASELINE_PROBE_USER, Scenario, auc_score, cold_item_split, cold_user_split, evaluate, evaluate_split,
    holdout_split, metric_names, temporal_split, user_metrics, world_split,
)
from recommender.model import LFMRecommender
from recommender.synthetic import make_world

L3, L5 = math.log2(3), math.log2(5)


# ---------------------------------------------------------------------- metrics, by hand


def test_user_metrics_by_hand():
    # ranking a b c d e f; relevant: b (rank 2) and d (rank 4)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    relevant = np.array([False, True, False, True, False, False])
    m = user_metrics(scores, relevant, ks=(2, 4))
    assert m["precision@2"] == pytest.approx(1 / 2)
    assert m["precision@4"] == pytest.approx(2 / 4)
    assert m["recall@2"] == pytest.approx(1 / 2)
    assert m["recall@4"] == pytest.approx(1.0)
    ideal = 1 + 1 / L3
    assert m["ndcg@2"] == pytest.approx((1 / L3) / ideal)
    assert m["ndcg@4"] == pytest.approx((1 / L3 + 1 / L5) / ideal)
    # pairs (positive, negative): 0.8 beats 0.7, 0.5, 0.4 but not 0.9; 0.6 beats 0.5, 0.4 -> 5 of 8
    assert m["auc"] == pytest.approx(5 / 8)


def test_precision_divides_by_k_even_with_few_candidates():
    m = user_metrics(np.array([3.0, 2.0, 1.0]), np.array([False, True, False]), ks=(5,))
    assert m["precision@5"] == pytest.approx(1 / 5)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["ndcg@5"] == pytest.approx(1 / L3)  # one hit at rank 2, ideal: at rank 1


def test_auc_ties_and_undefined_cases():
    assert auc_score(np.array([1.0, 1.0, 0.0]), np.array([True, False, False])) == pytest.approx(0.75)
    assert auc_score(np.array([1.0, 2.0]), np.array([True, False])) == 0.0
    assert auc_score(np.array([2.0, 1.0]), np.array([True, False])) == 1.0
    assert math.isnan(auc_score(np.array([1.0, 2.0]), np.array([True, True])))
    assert math.isnan(auc_score(np.array([1.0, 2.0]), np.array([False, False])))


def test_auc_matches_pairwise_count_on_random_scores():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    relevant = rng.random(40) < 0.3
    pos, neg = scores[relevant], scores[~relevant]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc_score(scores, relevant) == pytest.approx(pairs / (len(pos) * len(neg)))


class StubModel:
    """predict_online over items a..d with fixed scores per user; popularity for the probe user."""

    scores = {
        BASELINE_PROBE_USER: [4.0, 3.0, 2.0, 1.0],
        "u1": [0.1, 0.2, 0.9, 0.3],
        "u2": [0.5, 0.9, 0.4, 0.1],
    }

    def predict_online(self, user_id, item_ids=None, user_features=None, item_features=None):
        s = pd.Series(self.scores[user_id], index=pd.Index(["a", "b", "c", "d"], dtype=object), name="score")
        s.attrs["strategy"] = "popular" if user_id == BASELINE_PROBE_USER else "personalized"
        return s

    def prepare_items(self, item_features):
        raise AssertionError("no item features in this scenario")


def test_evaluate_by_hand_with_exclusion_and_coverage():
    train = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"]})
    test = pd.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["c", "a", "d"]})
    r = evaluate(StubModel(), Scenario("warm", train, test), k=(1, 2))
    assert r["users"] == 2 and r["candidates"] == 4 and r["positives"] == 3
    assert list(r["model"]) == metric_names((1, 2))
    ndcg2_u2 = 1 / (1 + 1 / L3)  # hit at rank 1 of 2 relevant
    # model: u1 ranks c > d > b (a excluded), u2 ranks a > c > d (b excluded)
    assert r["model"] == pytest.approx({
        "precision@1": 1.0, "precision@2": 0.5, "recall@1": 0.75, "recall@2": 0.75,
        "ndcg@1": 1.0, "ndcg@2": (1.0 + ndcg2_u2) / 2, "auc": (1.0 + 0.5) / 2,
        "coverage@1": 2 / 4, "coverage@2": 3 / 4})
    # popularity a > b > c > d: u1 gets b, c; u2 gets a, c
    assert r["popularity"] == pytest.approx({
        "precision@1": 0.5, "precision@2": 0.5, "recall@1": 0.25, "recall@2": 0.75,
        "ndcg@1": 0.5, "ndcg@2": ((1 / L3) + ndcg2_u2) / 2, "auc": 0.5,
        "coverage@1": 2 / 4, "coverage@2": 3 / 4})
    assert r["strategies"] == {"personalized": 2}


def test_evaluate_skips_users_whose_only_test_items_are_excluded_and_caps_users():
    train = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["c", "b"]})
    test = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["c", "a"]})  # u1's test item is a training item
    r = evaluate(StubModel(), Scenario("warm", train, test), k=(1,))
    assert r["users"] == 1 and r["model"]["precision@1"] == 1.0
    train = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"]})
    test = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["c", "a"]})
    assert evaluate(StubModel(), Scenario("warm", train, test), k=(1,), max_users=1)["users"] == 1


# ---------------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def small_world():
    return make_world(400, 300, mean_interactions=15, seed=11)


def test_cold_user_split_no_leakage(small_world):
    frame = small_world.interactions
    with_features = sorted(set(frame["user_id"]))[::2]  # only half the users have features
    feats = small_world.user_features[small_world.user_features["user_id"].isin(with_features)]
    train, test = cold_user_split(frame, feats, frac=0.1, seed=5)
    cold = set(test["user_id"])
    assert cold and not cold & set(train["user_id"])
    assert cold <= set(with_features)
    assert len(set(frame["user_id"]) - set(train["user_id"])) == round(0.1 * frame["user_id"].nunique())
    assert set(test["item_id"]) <= set(train["item_id"])  # only rankable items are test
    assert len(train) + len(test) <= len(frame) and len(train) == (~frame["user_id"].isin(
        set(frame["user_id"]) - set(train["user_id"]))).sum()
    again, _ = cold_user_split(frame, feats, frac=0.1, seed=5)
    other, _ = cold_user_split(frame, feats, frac=0.1, seed=6)
    assert again.equals(train) and not other.equals(train)


def test_cold_item_split_no_leakage(small_world):
    frame = small_world.interactions
    train, test = cold_item_split(frame, small_world.item_features, frac=0.1, seed=5)
    cold = set(frame["item_id"]) - set(train["item_id"])
    assert len(cold) == round(0.1 * frame["item_id"].nunique())
    assert set(test["item_id"]) <= cold and not set(test["item_id"]) & set(train["item_id"])
    assert set(test["user_id"]) <= set(train["user_id"])
    everything = frame[frame["item_id"].isin(cold) & frame["user_id"].isin(set(train["user_id"]))]
    assert len(test) == len(everything)


def test_split_arguments_are_checked(small_world):
    with pytest.raises(ValueError, match="frac"):
        cold_user_split(small_world.interactions, small_world.user_features, frac=0.0)
    with pytest.raises(ValueError, match="frac"):
        cold_item_split(small_world.interactions, small_world.item_features, frac=1.0)


def test_holdout_split_keeps_cold_users_and_items_out_of_training(small_world):
    w = small_world
    split = holdout_split(w.interactions, w.user_features, w.item_features, seed=3)
    train_users, train_items = set(split.train["user_id"]), set(split.train["item_id"])
    warm, cu, ci = (split.scenarios[s] for s in ("warm", "cold_users", "cold_items"))
    assert len(warm.test) and len(cu.test) and len(ci.test)
    assert set(warm.test["user_id"]) <= train_users and set(warm.test["item_id"]) <= train_items
    assert not set(cu.test["user_id"]) & train_users and set(cu.test["item_id"]) <= train_items
    assert set(cu.user_features) == set(cu.test["user_id"])
    assert set(ci.test["user_id"]) <= train_users and not set(ci.candidates) & train_items
    assert set(ci.test["item_id"]) <= set(ci.candidates) == set(ci.item_features)
    pairs = set(zip(split.train["user_id"], split.train["item_id"]))
    for sc in (warm, cu, ci):
        assert not pairs & set(zip(sc.test["user_id"], sc.test["item_id"]))
    # the warm part is exactly the temporal split of what the cold split left
    assert split.describe()["train"]["users"] == len(train_users)


def test_world_split_uses_the_worlds_new_users_and_items(small_world):
    w = small_world
    split = world_split(w.interactions, w.user_features, w.item_features, w.holdout, w.new_users, w.new_items)
    train, warm_test = temporal_split(w.interactions)
    assert split.train.equals(train) and split.scenarios["warm"].test.equals(warm_test)
    cu, ci = split.scenarios["cold_users"], split.scenarios["cold_items"]
    assert set(cu.test["user_id"]) <= set(w.new_users) and set(ci.candidates) == set(w.new_items)
    assert not set(w.new_users) & set(split.train["user_id"])
    assert not set(w.new_items) & set(split.train["item_id"])


def test_integer_ids_work_end_to_end(small_world):
    w = small_world
    strip = {"user_id": lambda s: s.str[1:].astype(int), "item_id": lambda s: s.str[1:].astype(int)}
    interactions = w.interactions.assign(**{c: f(w.interactions[c]) for c, f in strip.items()})
    ufeat = w.user_features.assign(user_id=strip["user_id"](w.user_features["user_id"]))
    ifeat = w.item_features.assign(item_id=strip["item_id"](w.item_features["item_id"]))
    split = holdout_split(interactions, ufeat, ifeat, seed=1)
    model = LFMRecommender(no_components=8, random_state=0).fit(split.train, ufeat, ifeat, epochs=2)
    res = evaluate_split(model, split, 10)
    cold_users, cold_items = res["cold_users"], res["cold_items"]
    assert cold_users["users"] > 0 and cold_users["strategies"] == {"features": cold_users["users"]}
    assert cold_items["users"] > 0 and cold_items["candidates"] == len(split.scenarios["cold_items"].candidates)
    assert res["warm"]["users"] > 0


def test_evaluate_agrees_with_recommend(small_world):
    """evaluate() scores with predict_online; its precision@10 is what recommend() top-10 lists give."""
    w = small_world
    split = world_split(w.interactions, w.user_features, w.item_features, w.holdout, w.new_users, w.new_items)
    model = LFMRecommender(no_components=8, random_state=0).fit(split.train, w.user_features, w.item_features,
                                                                 epochs=3)
    res = evaluate_split(model, split, 10, max_users=10_000)
    warm = split.scenarios["warm"]
    assert res["warm"]["users"] == warm.test["user_id"].nunique()
    for name, ask in (("warm", None), ("warm", BASELINE_PROBE_USER), ("cold_users", None), ("cold_items", None),
                      ("cold_items", BASELINE_PROBE_USER)):
        sc = split.scenarios[name]
        seen = sc.train.groupby("user_id")["item_id"].agg(set).to_dict()
        truth = sc.test.groupby("user_id")["item_id"].agg(set)
        hits = 0
        for user, items in truth.items():
            top = model.recommend(ask or user, 10, user_features=(sc.user_features or {}).get(user),
                                  item_ids=sc.candidates, item_features=sc.item_features,
                                  exclude=seen.get(user, ()))
            hits += len({i for i, _ in top} & items)
        who = "popularity" if ask else "model"
        assert res[name]["users"] == len(truth)
        assert res[name][who]["precision@10"] == pytest.approx(hits / (10 * len(truth))), (name, who)


# ---------------------------------------------------------------------- end to end


def test_model_beats_popularity_on_a_small_world():
    w = make_world(1000, 600, new_user_frac=0.1, new_item_frac=0.1, seed=42, feature_signal="strong")
    split = world_split(w.interactions, w.user_features, w.item_features, w.holdout, w.new_users, w.new_items)
    model = LFMRecommender(loss="warp", no_components=32, learning_rate=0.05, random_state=42)
    model.fit(split.train, split.user_features, split.item_features, epochs=10)
    res = evaluate_split(model, split, (5, 10), max_users=400)
    warm, cold_users, cold_items = res["warm"], res["cold_users"], res["cold_items"]
    assert cold_users["users"] >= 80 and cold_users["strategies"] == {"features": cold_users["users"]}
    assert cold_items["candidates"] == len(w.new_items)
    assert warm["model"]["precision@10"] > 1.2 * warm["popularity"]["precision@10"], warm
    assert cold_users["model"]["precision@10"] > 1.2 * cold_users["popularity"]["precision@10"], cold_users
    assert cold_items["model"]["auc"] > cold_items["popularity"]["auc"] + 0.1, cold_items
    for r in res.values():
        for who in ("model", "popularity"):
            assert all(0.0 <= v <= 1.0 for v in r[who].values()), r
