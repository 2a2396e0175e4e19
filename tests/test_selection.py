"""Selection by validation (recommender.selection) on worlds built so that the right answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.selection import POPULATIONS, select, validation_split
from recommender.synthetic import make_world

PARAMS = dict(loss="warp", no_components=16, learning_rate=0.05, random_state=1)


@pytest.fixture(scope="module")
def noise_split():
    """A world whose user and item features are pure noise (6 random names out of 40 each)."""
    world = make_world(600, 300, mean_interactions=20, seed=8)
    rng = np.random.default_rng(0)
    users = sorted(set(world.user_features["user_id"]))
    items = sorted(set(world.item_features["item_id"]))
    user_features = pd.DataFrame([(u, f"noise:{rng.integers(0, 40)}", 1.0) for u in users for _ in range(6)],
                                 columns=["user_id", "feature", "weight"])
    item_features = pd.DataFrame([(i, f"noise:{rng.integers(0, 40)}", 1.0) for i in items for _ in range(6)],
                                 columns=["item_id", "feature", "weight"])
    return validation_split(world.interactions, user_features, item_features)


def test_the_held_out_slice_has_every_population(noise_split):
    scenarios = noise_split.scenarios
    assert set(scenarios) == {"warm", "cold_users", "cold_items", "fresh"}
    fresh = scenarios["fresh"]
    assert not set(fresh.test["user_id"]) & set(noise_split.train["user_id"])  # never seen in training
    for user, shown in fresh.interactions.items():
        revealed = fresh.train[fresh.train["user_id"] == user]
        assert list(shown) == list(revealed["item_id"]) and len(shown) == 5
        later = fresh.test[fresh.test["user_id"] == user]
        assert revealed["timestamp"].max() <= later["timestamp"].min()  # the first ones by time


def test_with_noise_features_the_indicator_must_not_be_diluted(noise_split):
    """'together' scales the indicator down by the number of (noise) features; 'features' keeps it at 1."""
    chosen = select(noise_split, PARAMS, row_norms=("together", "features"), epochs=10, max_users=300)
    assert chosen.row_norm == "features"
    tried = {c["row_norm"]: c["warm_precision@10"] for c in chosen.candidates if "warm_precision@10" in c}
    assert tried["features"] > tried["together"]
    metrics = chosen.metrics()
    assert set(metrics["populations"]) == set(POPULATIONS)
    assert metrics["chosen"]["row_norm"] == "features" and metrics["chosen"]["epochs"] == 10


def test_a_strategy_that_loses_to_popularity_on_validation_is_never_served(noise_split):
    """Noise user features cannot beat popularity for users known only by them: popularity serves them."""
    chosen = select(noise_split, PARAMS, row_norms=("features",), epochs=10, max_users=300, blends=False)
    assert chosen.policy.feature_users == "popularity"
    feature_users = chosen.populations["feature_users"]
    assert feature_users["strategies"] == {"popular": feature_users["users"]}
    assert feature_users["precision@10"] == feature_users["popularity_precision@10"]
    tried = [c for c in chosen.candidates if c.get("population") == "feature_users"]
    assert tried and all(c["precision@10"] < c["popularity_precision@10"] for c in tried)


def test_early_stopping_keeps_the_best_checkpoint_and_the_budget_is_honoured(noise_split):
    chosen = select(noise_split, PARAMS, row_norms=("features", "together", "none"), epochs=None, step=2,
                    max_epochs=12, patience=1, budget_seconds=0.001, max_users=200)
    checkpoints = [c for c in chosen.candidates if "warm_precision@10" in c]
    assert [c["row_norm"] for c in checkpoints] == ["features"]  # one checkpoint, then the budget was spent
    assert chosen.budget_exhausted and {"row_norm": "none", "skipped": "time budget spent"} in chosen.candidates
    ridge = [c for c in chosen.candidates if c.get("item_item") == "ridge"]  # nor was a ridge ranker built
    assert ridge and all(c["skipped"].startswith("time budget") for c in ridge)
    assert chosen.policy.item_item == "cosine" and chosen.model.neighbors.spec == ("cosine",)
    full = select(noise_split, PARAMS, row_norms=("features",), epochs=None, step=2, max_epochs=12, patience=2,
                  max_users=200)
    scores = {c["epochs"]: c["warm_precision@10"] for c in full.candidates if "warm_precision@10" in c}
    assert full.epochs == max(scores, key=lambda e: (scores[e], -e))


def test_the_warm_item_item_blend_is_chosen_on_validation_and_its_ranker_is_the_one_served(noise_split):
    """Three epochs leave LightFM weak on warm users, so an item-item blend wins on validation; which ranker
    (cosine co-occurrence or the ridge item-item model) and weight is whatever scored best, and the model
    then holds that ranker (it is what travels in the artifact)."""
    chosen = select(noise_split, PARAMS, row_norms=("features",), epochs=3, max_users=300)
    warm = [c for c in chosen.candidates if c.get("population") == "warm_users"]
    assert {(c["item_item"], c["ridge_l2"]) for c in warm} == {("cosine", 8.0), ("ridge", 2.0), ("ridge", 8.0)}
    best = max(warm, key=lambda c: c["precision@10"])
    plain = next(c for c in warm if c["cooc"] == 0.0)
    assert best["precision@10"] > plain["precision@10"]  # the blend beat LightFM alone here
    policy = chosen.policy
    assert (policy.item_item, policy.warm.cooc) == (best["item_item"], best["cooc"])
    assert chosen.model.neighbors.spec == policy.item_item_spec
    assert chosen.metrics()["chosen"]["policy"]["item_item"] == policy.item_item


def test_item_item_cosine_never_builds_the_ridge_ranker(noise_split):
    from recommender.settings import Settings

    chosen = select(noise_split, PARAMS, row_norms=("features",), epochs=3, max_users=200, item_item="cosine")
    warm = [c for c in chosen.candidates if c.get("population") == "warm_users"]
    assert warm and {c["item_item"] for c in warm} == {"cosine"}
    assert chosen.policy.item_item == "cosine" and chosen.model.neighbors.spec == ("cosine",)
    assert Settings(item_item="ridge").validated().item_item == "ridge"
    with pytest.raises(ValueError, match="ITEM_ITEM"):
        Settings(item_item="magic").validated()


def test_each_ridge_ranker_is_built_once_and_a_forced_ridge_is_served_even_past_the_budget(noise_split, monkeypatch):
    from recommender.model.foldin import ItemNeighbors

    builds = []
    real = ItemNeighbors.ridge.__func__

    def counted(cls, user_items, l2=8.0, *args, **kwargs):
        builds.append(l2)
        return real(cls, user_items, l2, *args, **kwargs)

    monkeypatch.setattr(ItemNeighbors, "ridge", classmethod(counted))
    chosen = select(noise_split, PARAMS, row_norms=("features",), epochs=3, max_users=200)
    assert sorted(builds) == [2.0, 8.0]  # one build per candidate penalty, none again for the chosen one
    builds.clear()
    forced = select(noise_split, PARAMS, row_norms=("features",), epochs=3, max_users=200, item_item="ridge",
                    budget_seconds=0.001)
    assert forced.policy.item_item == "ridge" and forced.model.neighbors.spec == forced.policy.item_item_spec
    assert builds and not [c for c in forced.candidates if "skipped" in c and c.get("item_item") == "ridge"]
    assert chosen.model.neighbors.spec == chosen.policy.item_item_spec
