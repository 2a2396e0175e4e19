"""The EASE reference of the reports (recommender.evaluation.ease) on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.evaluation import evaluate
from recommender.evaluation.ease import EASE, ease_reference
from recommender.selection import validation_split
from recommender.synthetic import make_world


def test_ease_scores_are_its_closed_form_and_strangers_get_popularity():
    rows = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "b"), ("u4", "c"),
            ("u5", "c"), ("u5", "d"), ("u6", "a"), ("u6", "x")]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(weight=1.0)
    frame.loc[len(frame)] = ("u6", "d", -1.0)  # a negative signal is not a positive
    model = EASE(l2=0.5).fit(frame)
    items = ["a", "b", "c", "d", "x"]
    x = np.zeros((6, 5))
    for u, i in rows:
        x[int(u[1:]) - 1, items.index(i)] = 1.0
    p = np.linalg.inv(x.T @ x + 0.5 * np.eye(5))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    got = model.predict_online("u6")
    assert list(got.index) == items and got.attrs["strategy"] == "ease"
    np.testing.assert_allclose(got.to_numpy(), x[5] @ b, rtol=1e-10)
    assert got.drop(["a", "x"]).idxmax() == "b"  # what co-occurs with a
    stranger = model.predict_online("nobody")
    assert stranger.attrs["strategy"] == "popular" and stranger.to_dict() == {"a": 4, "b": 3, "c": 2, "d": 1, "x": 1}
    with pytest.raises(ValueError):
        EASE().fit(frame[frame["weight"] < 0])


def test_the_reference_picks_lambda_on_validation_and_beats_popularity():
    world = make_world(300, 150, seed=5)
    from recommender.evaluation import holdout_split

    split = holdout_split(world.interactions, world.user_features, world.item_features, seed=1)
    validation = validation_split(split.train, split.user_features, split.item_features)
    found = ease_reference(split, validation, max_users=200, grid=(10.0, 100.0))
    assert found["l2"] in (10.0, 100.0) and set(found["validation"]) == {"10.0", "100.0"}
    assert found["precision@10"] > found["popularity_precision@10"]
    direct = evaluate(EASE(found["l2"]).fit(split.scenarios["warm"].train), split.scenarios["warm"], (10,),
                      max_users=200)
    assert found["precision@10"] == direct["model"]["precision@10"]
