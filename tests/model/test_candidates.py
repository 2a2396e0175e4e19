"""Candidate filters, the catalogue mask, similar items and negative signals, against brute-force references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.errors import UnknownItemError
from recommender.evaluation import Scenario, evaluate
from recommender.model import LFMRecommender
from recommender.synthetic import make_world


@pytest.fixture(scope="module")
def world():
    return make_world(n_users=300, n_items=200, mean_interactions=15, seed=9)


@pytest.fixture(scope="module")
def model(world):
    return LFMRecommender(no_components=8, random_state=1).fit(world.interactions, world.user_features,
                                                              world.item_features, epochs=3)


def features_of(world, item):
    rows = world.item_features[world.item_features["item_id"] == item]
    return dict(zip(rows["feature"], rows["weight"]))


def test_filters_equal_a_brute_force_reference_with_changed_and_new_items(world, model):
    """AND of groups, OR within a group; changed known items and new items answer with their current features."""
    changed = model.iid_map.index[0]
    given = {changed: {"genre:horror": 1.0, "tag:horror-0": 1.0}}
    given.update({i: features_of(world, i) for i in world.new_items[:4]})
    prepared = model.prepare_items(given)
    current = {i: features_of(world, i) for i in model.iid_map.index}
    current.update(given)
    user = model.uid_map.index[3]
    scores = model.predict_online(user, item_features=given)
    for groups in ([["genre:horror"]], [["genre:horror", "genre:comedy"]], [["genre:drama"], ["tag:drama-1"]],
                   [["no:such-feature"]]):
        keep = [i for i in scores.index if all(any(current[i].get(f) for f in g) for g in groups)]
        reference = sorted(((i, float(scores[i])) for i in keep), key=lambda t: (-t[1], t[0]))[:7]
        got = model.recommend(user, 7, item_features=prepared, filters=groups)
        assert [i for i, _ in got] == [i for i, _ in reference], groups
    assert changed in [i for i, _ in model.recommend(user, 500, item_features=prepared, filters=[["genre:horror"]])]


@pytest.mark.parametrize("fraction", [1, 1000])  # a filter kept densely (mask) and sparsely (gathered rows)
def test_both_ways_of_applying_a_filter_agree(world, model, monkeypatch, fraction):
    monkeypatch.setattr("recommender.model.index.SUBSET_FRACTION", fraction)
    user = model.uid_map.index[5]
    got = model.recommend(user, 10, filters=[["genre:action", "genre:scifi"]])
    monkeypatch.setattr("recommender.model.index.SUBSET_FRACTION", 8)
    assert got == model.recommend(user, 10, filters=[["genre:action", "genre:scifi"]])
    assert all(world.item_genre[i] in ("action", "scifi") for i, _ in got)


def test_items_outside_the_catalogue_are_never_recommended(model):
    recommendable = np.ones(model.n_items, dtype=bool)
    top = [i for i, _ in model.recommend("nobody", 5)]
    blocked = [model.iid_map[top[0]], model.iid_map[top[2]]]
    recommendable[blocked] = False
    prepared = model.index.prepare_items({}, recommendable=recommendable)
    for user in ("nobody", model.uid_map.index[0]):
        answer = [i for i, _ in model.recommend(user, 50, item_features=prepared)]
        assert top[0] not in answer and top[2] not in answer
        restricted = [i for i, _ in model.recommend(user, 5, item_features=prepared, item_ids=top)]
        assert restricted == [i for i in [i for i, _ in model.recommend(user, 5, item_ids=top)] if i not in
                              (top[0], top[2])]
    assert top[0] not in [i for i, _ in model.similar(top[1], 50, item_features=prepared)]


def test_similar_items_are_the_cosine_nearest_representations(world, model):
    new = world.new_items[0]
    prepared = model.prepare_items({new: features_of(world, new)})
    rows = np.vstack([model.index.item_matrix[:, :-1], prepared.extra_matrix[:, :-1]])
    ids = list(model.iid_map.index) + prepared.extra_ids
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    for item in (model.iid_map.index[7], new):
        cos = unit @ unit[ids.index(item)]
        reference = sorted(((i, float(c)) for i, c in zip(ids, cos) if i != item), key=lambda t: (-t[1], t[0]))[:8]
        got = model.similar(item, 8, item_features=prepared)
        assert [i for i, _ in got] == [i for i, _ in reference]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in reference], rtol=1e-5, atol=1e-6)
        assert all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for _, s in got)
    with pytest.raises(UnknownItemError):
        model.similar("never-seen", 5)
    drama = model.similar(model.iid_map.index[7], 5, filters=[["genre:drama"]])
    assert drama and all(world.item_genre[i] == "drama" for i, _ in drama)


def test_negative_weights_never_count_as_popularity_or_positives():
    """Issue 14, fault 1: 10 users give 'hated' -1, 3 give 'liked' +1, 2 give 'meh' +1."""
    frame = pd.DataFrame({"user_id": [f"h{k}" for k in range(10)] + ["a", "b", "c", "d", "e"],
                          "item_id": ["hated"] * 10 + ["liked"] * 3 + ["meh"] * 2,
                          "weight": [-1.0] * 10 + [1.0] * 5})
    for loss in ("warp", "bpr", "logistic"):  # (k-OS WARP diverges on users with a single positive)
        model = LFMRecommender(no_components=4, loss=loss, random_state=0).fit(frame, epochs=2)
        assert [i for i, _ in model.recommend("anonymous", 3)] == ["liked", "meh", "hated"], loss
        assert model.baseline["hated"] == 0.0
    # a negative vetoes the pair's positives: its sample weight does not count either
    vetoed = pd.concat([frame, pd.DataFrame({"user_id": ["a"], "item_id": ["liked"], "weight": [-1.0]})])
    model = LFMRecommender(no_components=4, random_state=0).fit(vetoed, epochs=1)
    assert model.baseline["liked"] == model.baseline["meh"] == 2.0
    with pytest.raises(ValueError, match="no positive interaction"):
        LFMRecommender(no_components=4).fit(frame[frame["weight"] < 0], epochs=1)


def test_evaluation_counts_only_positive_held_out_interactions(model, world):
    user = model.uid_map.index[0]
    train = world.interactions[world.interactions["user_id"] == user]
    top = [i for i, _ in model.recommend(user, 10, exclude=train["item_id"])]
    liked = pd.DataFrame({"user_id": [user] * 2, "item_id": top[:2], "weight": [1.0, 1.0]})
    disliked = pd.DataFrame({"user_id": [user] * 3, "item_id": top[2:5], "weight": [-1.0, 0.0, -2.0]})
    both = evaluate(model, Scenario("warm", train, pd.concat([liked, disliked])), (10,))
    only_liked = evaluate(model, Scenario("warm", train, liked), (10,))
    assert both["model"]["precision@10"] == only_liked["model"]["precision@10"] == pytest.approx(0.2)
    assert both["positives"] == 2
