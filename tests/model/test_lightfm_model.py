"""LFMRecommender against LightFM.predict on explicitly built feature matrices, for all 16 cases."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from lightfm import LightFM

from recommender import ArtifactError, LFMRecommender, UnknownUserError
from recommender.synthetic import make_world

ROMAN = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII", "XIII", "XIV", "XV", "XVI"]
STATES = ["known+features", "known-no-features", "unknown+features", "unknown-no-features"]
SETTINGS = [("both", "features"), ("users", "features"), ("items", "features"), (False, "features"),
            ("both", "together"), ("both", "none")]


@pytest.fixture(scope="module")
def world():
    return make_world(n_users=240, n_items=160, mean_interactions=15, seed=7)


def features_of(frame: pd.DataFrame, id_col: str, entity: str) -> dict:
    rows = frame[frame[id_col] == entity]
    return dict(zip(rows["feature"], rows["weight"]))


def reference_row(space, entity_id, feats, row_norm) -> np.ndarray:
    """A feature row built by hand from the model's column layout, independently of FeatureSpace.rows."""
    ind = np.zeros(space.n_columns)
    if space.indicator and entity_id in space.id_index:
        ind[space.id_index[entity_id]] = 1.0
    feat = np.zeros(space.n_columns)
    for name, weight in (feats or {}).items():
        if name in space.feature_index:
            feat[space.feature_offset + space.feature_index[name]] += weight
    if row_norm == "features" and abs(feat).sum() > 0:
        feat = feat / abs(feat).sum()
    row = feat + ind
    if row_norm == "together" and abs(row).sum() > 0:
        row = row / abs(row).sum()
    return row


def lightfm_scores(model, user_row, item_rows) -> np.ndarray:
    """Plain LightFM.predict on one explicit user row against explicit item rows."""
    users = sp.csr_matrix(np.asarray([user_row], dtype=np.float32))
    items = sp.csr_matrix(np.asarray(item_rows, dtype=np.float32))
    n = items.shape[0]
    return LightFM.predict(model, np.zeros(n, dtype=np.int32), np.arange(n, dtype=np.int32),
                           user_features=users, item_features=items)


@pytest.fixture(scope="module", params=SETTINGS, ids=[f"{i}-{n}" for i, n in SETTINGS])
def ctx(request, world):
    indicators, row_norm = request.param
    model = LFMRecommender(indicators=indicators, row_norm=row_norm, loss="warp", no_components=8,
                           random_state=3)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=5)
    known_users = sorted(set(world.interactions["user_id"]))
    known_items = sorted(set(world.interactions["item_id"]))
    ku, ki = known_users[3], known_items[5]
    nu, ni = world.new_users[0], world.new_items[0]
    users = {
        "known+features": (ku, dict(features_of(world.user_features, "user_id", ku), **{"unseen:x": 1.0})),
        "known-no-features": (ku, {}),
        "unknown+features": (nu, features_of(world.user_features, "user_id", nu)),
        "unknown-no-features": ("nobody-knows-me", None),
    }
    items = {
        "known+features": (ki, {"genre:drama": 1.0, "tag:drama-1": 0.5}),
        "known-no-features": (ki, {}),
        "unknown+features": (ni, features_of(world.item_features, "item_id", ni)),
        "unknown-no-features": ("never-seen-item", None),
    }
    return SimpleNamespace(model=model, users=users, items=items, indicators=indicators, row_norm=row_norm)


@pytest.mark.parametrize("case", range(16), ids=ROMAN)
def test_sixteen_cases_match_lightfm_predict(ctx, case):
    item_state, user_state = STATES[case // 4], STATES[case % 4]
    model = ctx.model
    user_id, ufeats = ctx.users[user_state]
    item_id, ifeats = ctx.items[item_state]
    item_features = {item_id: ifeats} if ifeats is not None else None
    result = model.predict_online(user_id, item_ids=[item_id], user_features=ufeats, item_features=item_features)

    if item_state == "unknown-no-features":  # XIII-XVI: cannot be scored, reported
        assert len(result) == 0
        assert result.attrs["unscorable"] == [item_id]
        return
    assert list(result.index) == [item_id]
    if user_state == "unknown-no-features":  # IV, VIII, XII: popularity baseline
        assert result.attrs["strategy"] == "popular"
        if item_id in model.iid_map.index:
            assert result[item_id] == pytest.approx(model.baseline[item_id])
        else:
            assert np.isfinite(result[item_id])
        with pytest.raises(UnknownUserError):
            model.predict_online(user_id, item_ids=[item_id], item_features=item_features, use_baseline=False)
        return
    expected_strategy = "personalized" if user_state.startswith("known") else "features"
    assert result.attrs["strategy"] == expected_strategy
    urow = reference_row(model.user_space, user_id, ufeats, ctx.row_norm)
    irow = reference_row(model.item_space, item_id, ifeats, ctx.row_norm)
    expected = lightfm_scores(model, urow, [irow])
    np.testing.assert_allclose(result.to_numpy(), expected, rtol=1e-5, atol=1e-5)
    if user_state == "known+features":
        assert result.attrs["ignored_features"] == {"unseen:x": 1}


def test_all_candidates_together_match_lightfm(ctx, world):
    """Every known item (training rows) plus new items with features, for a user with features."""
    model = ctx.model
    user_id, ufeats = ctx.users["unknown+features"]
    new_feats = {i: features_of(world.item_features, "item_id", i) for i in world.new_items[:5]}
    result = model.predict_online(user_id, user_features=ufeats, item_features=new_feats)
    known = list(model.iid_map.index)
    assert list(result.index) == known + list(new_feats)
    urow = reference_row(model.user_space, user_id, ufeats, ctx.row_norm)
    item_rows = model.item_features_.toarray().tolist() + [
        reference_row(model.item_space, i, f, ctx.row_norm) for i, f in new_feats.items()]
    np.testing.assert_allclose(result.to_numpy(), lightfm_scores(model, urow, item_rows), rtol=1e-5, atol=1e-5)


def test_known_user_defaults_to_training_rows(ctx):
    model = ctx.model
    user = ctx.users["known+features"][0]
    result = model.predict_online(user)
    expected = LightFM.predict(model, int(model.uid_map[user]), model.iid_map.to_numpy(dtype=np.int32),
                               user_features=model.user_features_, item_features=model.item_features_)
    np.testing.assert_allclose(result.to_numpy(), expected, rtol=1e-5, atol=1e-5)


def test_pure_collaborative_equals_lightfm_predict(world):
    model = LFMRecommender(loss="warp", no_components=8, random_state=0).fit(world.interactions, epochs=5)
    items = ["i3", "i10", "i7", "i12"]
    items = [i for i in items if i in model.iid_map.index]
    for user in list(model.uid_map.index[:5]):
        got = model.predict_online(user, item_ids=items)
        expected = LightFM.predict(model, int(model.uid_map[user]), model.iid_map[items].to_numpy(dtype=np.int32))
        np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-6, atol=1e-6)


def test_unseen_user_with_features_gets_items_of_its_taste():
    world = make_world(n_users=1200, n_items=600, mean_interactions=25, seed=11, feature_signal="strong")
    model = LFMRecommender(loss="warp", no_components=16, random_state=1, learning_rate=0.05)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=15)
    hits = base = 0
    mean_gap_positive = 0
    for user in world.new_users:
        assert user not in model.uid_map.index
        feats = features_of(world.user_features, "user_id", user)
        top = model.recommend(user, 10, user_features=feats)
        liked = set(world.user_interests[user])
        hits += sum(world.item_genre[i] in liked for i, _ in top)
        base += 10 * np.mean([world.item_genre[i] in liked for i in model.iid_map.index])
        scores = model.predict_online(user, user_features=feats)
        in_taste = np.array([world.item_genre[i] in liked for i in scores.index])
        mean_gap_positive += scores[in_taste].mean() > scores[~in_taste].mean()
    n = len(world.new_users)
    precision, base_rate = hits / (10 * n), base / (10 * n)
    # measured 0.75 against a base rate of 0.17: the features alone carry the user's taste
    assert precision >= 0.6, (precision, base_rate)
    assert precision > 3 * base_rate
    assert mean_gap_positive >= 0.95 * n


def test_recommend_is_sorted_top_of_predict_online_and_excludes(ctx):
    model = ctx.model
    user = ctx.users["known+features"][0]
    scores = model.predict_online(user).sort_values(ascending=False, kind="stable")
    top = model.recommend(user, 10)
    assert [s for _, s in top] == sorted([s for _, s in top], reverse=True)
    np.testing.assert_allclose([s for _, s in top], scores.iloc[:10].to_numpy(), rtol=1e-6)
    excluded = [i for i, _ in top[:3]]
    again = model.recommend(user, 10, exclude=excluded)
    assert not set(excluded) & {i for i, _ in again}
    assert [i for i, _ in again][:7] == [i for i, _ in top[3:]]
    restricted = model.recommend(user, 3, item_ids=list(scores.index[-5:]) + ["missing"])
    assert {i for i, _ in restricted} <= set(scores.index[-5:])
    assert model.recommend(user, 0) == []
    assert len(model.recommend(user, 10_000)) == model.n_items


def test_int_and_string_ids_are_the_same(world):
    frame = pd.DataFrame({"user_id": [1, 1, 2, 3, 3, 3], "item_id": [10, 11, 10, 12, 11, 10]})
    model = LFMRecommender(no_components=4, random_state=0).fit(frame, epochs=2)
    assert list(model.uid_map.index) == ["1", "2", "3"]
    np.testing.assert_array_equal(model.predict_online(1).to_numpy(), model.predict_online("1").to_numpy())
    assert model.recommend(2, 2, item_ids=[10, "11"]) == model.recommend("2", 2, item_ids=["10", 11])


def test_popularity_baseline_orders_by_count_then_mean_weight():
    frame = pd.DataFrame({"user_id": ["a", "b", "c", "a", "b", "a", "c"],
                          "item_id": ["x", "x", "x", "y", "y", "z", "z"],
                          "weight": [1, 1, 1, 1, 1, 5, 5]})
    model = LFMRecommender(no_components=4, random_state=0).fit(frame, epochs=1)
    ranked = [i for i, _ in model.recommend("stranger", 3)]
    assert ranked == ["x", "z", "y"]  # x: 3 interactions; z and y: 2 each, z has the higher mean weight
    assert model.predict_online("stranger").attrs["strategy"] == "popular"


def test_new_items_for_baseline_users_follow_their_feature_bias(world):
    model = LFMRecommender(loss="warp", no_components=8, random_state=3)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=5)
    genres = [c for c in model.item_space.feature_names if c.startswith("genre:")]
    bias = {g: float(model.item_biases[model.item_space.feature_offset + model.item_space.feature_index[g]])
            for g in genres}
    lo, hi = min(bias, key=bias.get), max(bias, key=bias.get)
    result = model.predict_online("nobody", item_ids=["new-lo", "new-hi"],
                                  item_features={"new-lo": {lo: 1.0}, "new-hi": {hi: 1.0}})
    assert result.attrs["strategy"] == "popular"
    assert result["new-hi"] >= result["new-lo"]
    assert model.baseline.min() <= result["new-lo"] <= model.baseline.max()


def test_unseen_feature_names_are_ignored_and_reported(ctx):
    model = ctx.model
    result = model.predict_online("brand-new", user_features={"nothing:known": 1.0})
    assert result.attrs["strategy"] == "popular"  # no usable features -> nothing known
    assert result.attrs["ignored_features"] == {"nothing:known": 1}


@pytest.mark.parametrize("bad, message", [
    (pd.DataFrame({"user_id": [], "item_id": []}), "empty"),
    (pd.DataFrame({"user_id": ["a"], "item_id": ["b"], "weight": [np.nan]}), "NaN"),
    (pd.DataFrame({"user_id": ["a"], "item_id": ["b"], "weight": [np.inf]}), "infinite"),
    (pd.DataFrame({"user": ["a"], "item_id": ["b"]}), "user_id"),
])
def test_bad_interactions_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        LFMRecommender().fit(bad)


def test_bad_parameters_raise_value_error(world):
    with pytest.raises(ValueError, match="indicators"):
        LFMRecommender(indicators="neither")
    with pytest.raises(ValueError, match="indicators"):
        LFMRecommender(indicators=True)
    with pytest.raises(ValueError, match="row_norm"):
        LFMRecommender(row_norm="l2")
    with pytest.raises(ValueError, match="user_features are required"):
        LFMRecommender(indicators="items").fit(world.interactions, item_features=world.item_features)
    with pytest.raises(ValueError, match="item_features are required"):
        LFMRecommender(indicators=False).fit(world.interactions, user_features=world.user_features)
    bad_feats = world.user_features.assign(weight=np.where(np.arange(len(world.user_features)) == 4, np.nan, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        LFMRecommender().fit(world.interactions, user_features=bad_feats)
    model = LFMRecommender(no_components=4).fit(world.interactions, epochs=1)
    with pytest.raises(ValueError, match="finite"):
        model.predict_online("x", user_features={"age:18-24": float("nan")})
    with pytest.raises(ValueError, match="number"):
        model.recommend("x", user_features={"age:18-24": "heavy"})
    with pytest.raises(ValueError, match="n must be"):
        model.recommend("x", n=-1)


def test_fit_partial_rejects_new_ids_and_continues_training(world):
    model = LFMRecommender(loss="warp", no_components=8, random_state=3)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=2)
    before = model.predict_online("u5" if "u5" in model.uid_map.index else model.uid_map.index[0]).to_numpy()
    extra = pd.DataFrame({"user_id": ["totally-new"], "item_id": [model.iid_map.index[0]]})
    with pytest.raises(ValueError, match="new user id"):
        model.fit_partial(extra)
    extra = pd.DataFrame({"user_id": [model.uid_map.index[0]], "item_id": ["new-item"]})
    with pytest.raises(ValueError, match="new item id"):
        model.fit_partial(extra)
    model.fit_partial(world.interactions, epochs=1)
    after = model.predict_online("u5" if "u5" in model.uid_map.index else model.uid_map.index[0]).to_numpy()
    assert not np.allclose(before, after)


def test_refit_invalidates_item_cache(world):
    model = LFMRecommender(loss="warp", no_components=8, random_state=3)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=2)
    feats = {"fresh": {"genre:drama": 1.0}}
    user = model.uid_map.index[0]
    first = model.predict_online(user, item_ids=["fresh"], item_features=feats)["fresh"]
    model.predict_online(user, item_ids=["fresh"], item_features=feats)
    assert model.cache_hits == 1
    model.random_state = np.random.RandomState(99)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=4)
    assert model.cache_hits == 0 and model.cache_misses == 0
    second = model.predict_online(user, item_ids=["fresh"], item_features=feats)
    urow = model.user_features_[model.uid_map[user]].toarray()[0]
    irow = reference_row(model.item_space, "fresh", feats["fresh"], model.row_norm)
    np.testing.assert_allclose(second.to_numpy(), lightfm_scores(model, urow, [irow]), rtol=1e-5, atol=1e-5)
    assert second["fresh"] != first


def test_save_load_round_trip_gives_identical_scores(tmp_path, ctx, world):
    model = ctx.model
    model.save(tmp_path / "m")
    loaded = LFMRecommender.load(tmp_path / "m")
    user_id, ufeats = ctx.users["unknown+features"]
    new = {world.new_items[1]: features_of(world.item_features, "item_id", world.new_items[1])}
    for args in [dict(user_id=ctx.users["known+features"][0]), dict(user_id=user_id, user_features=ufeats),
                 dict(user_id="nobody", item_features=new)]:
        a, b = model.predict_online(**args), loaded.predict_online(**args)
        assert list(a.index) == list(b.index)
        np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    assert loaded.indicators == model.indicators and loaded.row_norm == model.row_norm
    assert not list(tmp_path.glob("m/*.pkl"))
    loaded.fit_partial(world.interactions, epochs=1)  # a loaded model can keep training


def test_load_rejects_truncated_altered_and_foreign(tmp_path, world):
    model = LFMRecommender(no_components=4, random_state=0).fit(world.interactions, epochs=1)
    good = tmp_path / "good"
    model.save(good)
    import shutil

    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    data = (truncated / "arrays.npz").read_bytes()
    (truncated / "arrays.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated or altered"):
        LFMRecommender.load(truncated)

    altered = tmp_path / "altered"
    shutil.copytree(good, altered)
    meta = json.loads((altered / "meta.json").read_text())
    meta["item_ids"][0] = "evil"
    (altered / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="altered"):
        LFMRecommender.load(altered)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "meta.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ArtifactError, match="does not hold"):
        LFMRecommender.load(foreign)
    with pytest.raises(ArtifactError, match="missing"):
        LFMRecommender.load(tmp_path / "nothing-here")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "meta.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="JSON"):
        LFMRecommender.load(tmp_path / "garbage")


STACKING = pytest.mark.parametrize("stack_max_rows", [200_000, 0], ids=["stacked", "unstacked"])


@STACKING
def test_prepared_items_score_like_the_dict_path(ctx, world, monkeypatch, stack_max_rows):
    """Both ways PreparedItems are scored (one stacked matrix, or known matrix + overrides + extras)."""
    monkeypatch.setattr("recommender.model.index.STACK_MAX_ROWS", stack_max_rows)
    model = ctx.model
    feats = {i: features_of(world.item_features, "item_id", i) for i in world.new_items[:4]}
    feats[ctx.items["known+features"][0]] = {"genre:comedy": 1.0}
    feats["only-unseen"] = {"nothing:known": 1.0}
    prepared = model.prepare_items(feats)
    assert (prepared.stacked is not None) == bool(stack_max_rows)
    for user, ufeats in [ctx.users["known+features"], ctx.users["unknown+features"], ("nobody", None)]:
        a = model.predict_online(user, user_features=ufeats, item_features=feats)
        b = model.predict_online(user, user_features=ufeats, item_features=prepared)
        assert list(a.index) == list(b.index)
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6)
        assert b.attrs["unscorable"] == ["only-unseen"]
        assert model.recommend(user, 5, user_features=ufeats, item_features=prepared) == \
            model.recommend(user, 5, user_features=ufeats, item_features=feats)
    other = LFMRecommender(no_components=4).fit(world.interactions, epochs=1)
    with pytest.raises(ValueError, match="another model"):
        other.recommend("u1", item_features=prepared)


def test_training_rows_match_hand_built_rows(ctx, world):
    """The matrices fit() trained on are the rows a hand-built reference gives (normalisation included)."""
    model = ctx.model
    for space, matrix, frame, col in ((model.user_space, model.user_features_, world.user_features, "user_id"),
                                      (model.item_space, model.item_features_, world.item_features, "item_id")):
        for pos in (0, 1, space.n_ids // 2, space.n_ids - 1):
            entity = space.ids[pos]
            expected = reference_row(space, entity, features_of(frame, col, entity), ctx.row_norm)
            np.testing.assert_allclose(matrix[pos].toarray()[0], expected, rtol=1e-6, atol=1e-7)


def test_approximate_recommend_uses_the_index_and_matches_exact_on_small_catalogues(world):
    from recommender.model.ann import AnnIndex

    model = LFMRecommender(loss="warp", no_components=8, random_state=3)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=3)
    user = model.uid_map.index[4]
    new = {i: features_of(world.item_features, "item_id", i) for i in world.new_items[:3]}
    new[model.iid_map.index[0]] = {"genre:comedy": 1.0}  # a known item whose features changed
    prepared = model.prepare_items(new)
    exact = model.recommend(user, 10, item_features=prepared, exclude=["i1", "i2"])
    ranking = model.rank(user, 10, item_features=prepared, approximate=True)
    assert ranking.items == model.recommend(user, 10, item_features=prepared)  # no index attached: exact path
    assert ranking.approximate is False
    model.ann_index = AnnIndex.build(model.index.item_matrix, ef_search=256)
    ranking = model.rank(user, 10, item_features=prepared, exclude=["i1", "i2"], approximate=True)
    approx = ranking.items
    assert ranking.approximate is True
    assert [i for i, _ in approx] == [i for i, _ in exact]  # 160 items: HNSW finds the true top 10
    np.testing.assert_allclose([s for _, s in approx], [s for _, s in exact], rtol=1e-5, atol=1e-5)
    class TwoRowIndex:  # a stand-in index that returns too few rows (the fallback is under test, not faiss)
        n = model.n_items

        def query(self, vector, k):
            rows = np.arange(2)
            return rows, model.index.item_matrix[rows] @ vector

    model.ann_index = TwoRowIndex()
    ranking = model.rank(user, 5, exclude=["i1"], approximate=True)
    assert ranking.approximate is False  # the index could not supply 5 candidates: the exact path answered
    assert ranking.items == model.recommend(user, 5, exclude=["i1"])


@STACKING
def test_recommend_excludes_known_and_new_items_like_a_sorted_reference(ctx, world, monkeypatch, stack_max_rows):
    monkeypatch.setattr("recommender.model.index.STACK_MAX_ROWS", stack_max_rows)
    model = ctx.model
    feats = {i: features_of(world.item_features, "item_id", i) for i in world.new_items[:6]}
    feats[ctx.items["known+features"][0]] = {"genre:comedy": 1.0}  # a known item with changed features
    prepared = model.prepare_items(feats)
    assert (prepared.stacked is not None) == bool(stack_max_rows)
    for user, ufeats in [ctx.users["known+features"], ctx.users["unknown+features"], ("nobody", None)]:
        scores = model.predict_online(user, user_features=ufeats, item_features=feats)
        # the reference order: best score first, ties by id
        reference = sorted(zip(scores.index, scores.to_numpy().tolist()), key=lambda t: (-t[1], t[0]))
        excluded = {reference[0][0], reference[2][0], world.new_items[0], "not-an-item"}
        expected = [(i, s) for i, s in reference if i not in excluded][:12]
        got = model.recommend(user, 12, user_features=ufeats, item_features=prepared, exclude=excluded)
        assert [i for i, _ in got] == [i for i, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-6)
        everything = model.recommend(user, 10_000, user_features=ufeats, item_features=prepared, exclude=excluded)
        assert len(everything) == len(reference) - 3


def test_cached_user_representations_follow_features_and_refits(world):
    """Repeat requests reuse a user's representation, but only for the same features and the same fit."""
    model = LFMRecommender(loss="warp", no_components=8, random_state=3)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=2)
    user = model.uid_map.index[2]
    items = list(model.iid_map.index[:30])
    variants = [{"age:25-34": 1.0}, {"interest:horror": 1.0, "unseen:y": 2.0}, {"age:25-34": 0.5}, {}]

    def check(feats):
        result = model.predict_online(user, item_ids=items, user_features=feats)
        urow = reference_row(model.user_space, user, feats, model.row_norm)
        irows = [model.item_features_[model.iid_map[i]].toarray()[0] for i in items]
        np.testing.assert_allclose(result.to_numpy(), lightfm_scores(model, urow, irows), rtol=1e-5, atol=1e-5)
        assert result.attrs["ignored_features"] == ({"unseen:y": 1} if "unseen:y" in feats else {})
        return result

    for feats in variants + variants[::-1]:  # each twice: computed, then from the cache
        check(feats)
    assert len(model.index.user_cache) == len(variants)  # noqa: SLF001
    before = check(variants[0])
    model.random_state = np.random.RandomState(99)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=4)
    after = check(variants[0])
    assert not np.allclose(before.to_numpy(), after.to_numpy())
    with pytest.raises(ValueError):
        model.predict_online(user, item_ids=items, user_features={"age:25-34": float("nan")})


def test_cache_hits_never_skip_validation_and_old_prepared_items_are_refused(world):
    """A cached representation is only reused for an input the row builder accepts; PreparedItems
    made before fit_partial hold the old item rows and are refused."""
    model = LFMRecommender(loss="warp", no_components=8, random_state=3)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=2)
    user = model.uid_map.index[2]
    model.predict_online(user, user_features={"age:25-34": 1.0})
    model.predict_online("fresh-user", item_ids=["x"], item_features={"x": {"genre:drama": 1.0}})
    for bad in (True, "1", np.True_):
        with pytest.raises(ValueError, match="must be a number"):
            model.predict_online(user, user_features={"age:25-34": bad})
        with pytest.raises(ValueError, match="must be a number"):
            model.predict_online("fresh-user", item_ids=["x"], item_features={"x": {"genre:drama": bad}})
    prepared = model.prepare_items({"x": {"genre:drama": 1.0}})
    model.recommend(user, 5, item_features=prepared)
    model.fit_partial(world.interactions, world.user_features, world.item_features, epochs=1)
    with pytest.raises(ValueError, match="before the last fit"):
        model.recommend(user, 5, item_features=prepared)
    fresh = model.prepare_items({"x": {"genre:drama": 1.0}})
    assert model.recommend(user, 5, item_features=fresh) == model.recommend(
        user, 5, item_features={"x": {"genre:drama": 1.0}})
