"""Fold-in and blends (recommender.model.foldin) against independent numpy references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lightfm import LightFM

from recommender.model import LFMRecommender
from recommender.model.foldin import Blend, FoldIn, ItemNeighbors, ServingPolicy
from recommender.synthetic import make_world


@pytest.fixture(scope="module")
def small():
    """A world with fewer items than the 50 neighbours kept per item, so no neighbour is cut."""
    world = make_world(n_users=200, n_items=40, mean_interactions=8, seed=4)
    model = LFMRecommender(no_components=8, loss="warp", row_norm="features", random_state=2)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=3)
    return world, model


def cosine_cooccurrence(frame: pd.DataFrame, items: list[str]) -> np.ndarray:
    """Brute force: users-by-items 0/1 matrix, then cosine between item columns, diagonal 0."""
    users = sorted(set(frame["user_id"]))
    x = np.zeros((len(users), len(items)))
    for u, i in zip(frame["user_id"], frame["item_id"]):
        x[users.index(u), items.index(i)] = 1.0
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    cos = co / np.outer(norms, norms)
    np.fill_diagonal(cos, 0.0)
    return np.nan_to_num(cos)


def z(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()


def test_neighbours_are_the_cosine_cooccurrence(small):
    world, model = small
    items = list(model.iid_map.index)
    reference = cosine_cooccurrence(world.interactions, items)
    np.testing.assert_allclose(model.neighbors.matrix.toarray(), reference, rtol=1e-5, atol=1e-6)
    cut = ItemNeighbors.fit(np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 0, 1]), 2, 3, k=1)
    assert cut.matrix.getnnz(axis=1).tolist() == [1, 1, 1]


def test_the_ridge_item_item_model_is_ease_when_every_item_is_a_neighbour():
    """With every pair of items co-occurring and k = n - 1, the per-item ridge regressions are EASE's closed
    form (Steck 2019): B = I - P diag(1/diag P), P = (X'X + lambda I)^-1, lambda = l2 x mean users per item."""
    rng = np.random.default_rng(3)
    x = (rng.random((120, 9)) < 0.55).astype(np.float64)
    g = x.T @ x
    assert (g > 0).all()  # every pair co-occurs
    lam = 2.0 * np.diag(g).mean()
    p = np.linalg.inv(g + lam * np.eye(9))
    ease = -p / np.diag(p)
    np.fill_diagonal(ease, 0.0)
    import scipy.sparse as sp
    got = ItemNeighbors.ridge(sp.csr_matrix(x), l2=2.0, k=8)
    assert got.spec == ("ridge", 2.0)
    np.testing.assert_allclose(got.matrix.toarray(), ease, rtol=1e-4, atol=1e-6)
    # with k < n - 1, column j draws on its k most co-occurring items only, and each row keeps k weights
    small_k = ItemNeighbors.ridge(sp.csr_matrix(x), l2=2.0, k=3).matrix.toarray()
    for j in range(9):
        counts = np.where(np.arange(9) == j, -1, g[:, j])
        assert all(counts[i] >= sorted(counts)[-3] for i in np.flatnonzero(small_k[:, j]))
    assert max(np.count_nonzero(row) for row in small_k) <= 3


def test_a_policy_with_the_ridge_ranker_builds_it_blends_it_and_it_travels_with_the_model(small, tmp_path):
    world, model = small
    copy = model.clone()
    policy = ServingPolicy(warm=Blend(cooc=0.7), item_item="ridge", ridge_l2=4.0)
    copy.set_policy(policy)
    assert copy.neighbors.spec == ("ridge", 4.0) and model.neighbors.spec == ("cosine",)
    user = model.uid_map.index[5]
    items = list(model.iid_map.index)
    users = sorted(set(world.interactions["user_id"]))
    x = np.zeros((len(users), len(items)))
    for u, i in zip(world.interactions["user_id"], world.interactions["item_id"]):
        x[users.index(u), items.index(i)] = 1.0
    g = x.T @ x
    lam = 4.0 * np.diag(g)[np.diag(g) > 0].mean()
    weights = np.zeros((len(items), len(items)))  # every item's 39 others are its neighbours (40 items)
    for j in range(len(items)):
        others = [i for i in range(len(items)) if i != j and g[i, j] > 0]
        weights[others, j] = np.linalg.solve(g[np.ix_(others, others)] + lam * np.eye(len(others)), g[others, j])
    lightfm = LightFM.predict(model, int(model.uid_map[user]), np.arange(len(items), dtype=np.int32),
                              user_features=model.user_features_, item_features=model.item_features_)
    ridge = x[users.index(user)] @ weights
    got = copy.predict_online(user)
    np.testing.assert_allclose(got.to_numpy(), z(lightfm) + 0.7 * z(ridge), rtol=1e-4, atol=1e-4)
    copy.save(tmp_path / "ridge")
    loaded = LFMRecommender.load(tmp_path / "ridge")
    assert loaded.policy == policy and loaded.neighbors.spec == ("ridge", 4.0)
    np.testing.assert_allclose(loaded.neighbors.matrix.toarray(), copy.neighbors.matrix.toarray())
    np.testing.assert_allclose(loaded.predict_online(user).to_numpy(), got.to_numpy(), rtol=1e-6)
    copy.set_policy(ServingPolicy())  # back to cosine co-occurrence
    np.testing.assert_allclose(copy.neighbors.matrix.toarray(), model.neighbors.matrix.toarray())
    with pytest.raises(ValueError):
        ServingPolicy(item_item="magic")
    with pytest.raises(ValueError):
        ServingPolicy(item_item="ridge", ridge_l2=0.0)


def test_warm_cooccurrence_blend_equals_its_reference(small):
    world, model = small
    user = model.uid_map.index[5]
    policy = ServingPolicy(warm=Blend(cooc=0.7))
    got = model.predict_online(user, policy=policy)
    assert got.attrs["strategy"] == "personalized"
    items = list(model.iid_map.index)
    lightfm = LightFM.predict(model, int(model.uid_map[user]), np.arange(len(items), dtype=np.int32),
                              user_features=model.user_features_, item_features=model.item_features_)
    history = set(world.interactions.loc[world.interactions["user_id"] == user, "item_id"])
    cooc = cosine_cooccurrence(world.interactions, items)[[items.index(i) for i in history]].sum(axis=0)
    np.testing.assert_allclose(got.to_numpy(), z(lightfm) + 0.7 * z(cooc), rtol=1e-4, atol=1e-4)
    # without a policy (or with the default one) the scores stay LightFM's own
    np.testing.assert_allclose(model.predict_online(user).to_numpy(), lightfm, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fold_in", [FoldIn("mean", strength=0.8), FoldIn("ls", strength=2.0, prior=3.0,
                                                                          negatives=1.5)])
def test_fold_in_moves_the_user_vector_as_its_formula_says(small, fold_in):
    world, model = small
    new_user = "fresh-one"
    given = {"i3": 1.0, "i7": 2.0, "i11": 1.0}
    policy = ServingPolicy(fresh=Blend(), fold_in=fold_in)
    got = model.predict_online(new_user, interactions=given, policy=policy)
    assert got.attrs["strategy"] == "interactions"
    item_bias, item_repr = model.get_item_representations(model.item_features_)
    rows = [model.iid_map[i] for i in given]
    v, b = item_repr[rows].astype(np.float64), item_bias[rows].astype(np.float64)
    w = np.array(list(given.values())) / sum(given.values())
    if fold_in.method == "mean":
        u = fold_in.strength * (w @ v)
    else:  # least squares: interacted items near `strength`, every item near 0, towards u0 = 0
        gram = item_repr.astype(np.float64).T @ item_repr / len(item_repr)
        n = len(rows)
        a = (v * w[:, None]).T @ v * n + fold_in.negatives * n * gram + fold_in.prior * np.eye(v.shape[1])
        u = np.linalg.solve(a, (v * w[:, None]).T @ (fold_in.strength - b) * n)
    np.testing.assert_allclose(got.to_numpy(), item_repr @ u + item_bias, rtol=1e-4, atol=1e-4)
    # with features, the starting point is the features' representation
    feats = {"age:25-34": 1.0}
    with_features = model.predict_online(new_user, user_features=feats, interactions=given, policy=policy)
    assert not np.allclose(with_features.to_numpy(), got.to_numpy())


def test_least_squares_fold_in_without_a_prior_and_one_item_still_answers(small):
    # prior 0 and no negatives: V'WV has rank 1, LAPACK's Cholesky fails; the least-squares fallback answers
    world, model = small
    policy = ServingPolicy(fresh=Blend(), fold_in=FoldIn("ls", strength=1.0, prior=0.0, negatives=0.0))
    got = model.predict_online("fresh-two", interactions={"i3": 1.0}, policy=policy)
    assert got.attrs["strategy"] == "interactions" and np.isfinite(got.to_numpy()).all()
    # least squares gives the minimum-norm u = v (strength - b) / |v|^2: i3's score v.u + b is strength exactly
    assert got["i3"] == pytest.approx(1.0, abs=1e-3)


def test_a_user_known_only_by_its_interactions_is_ranked_by_what_cooccurs(small):
    world, model = small
    items = list(model.iid_map.index)
    given = {"i3": 1.0, "i7": 1.0}
    got = model.predict_online("stranger", interactions=given)  # the default policy: fresh users by co-occurrence
    assert got.attrs["strategy"] == "interactions"
    cooc = cosine_cooccurrence(world.interactions, items)[[items.index(i) for i in given]].sum(axis=0)
    popularity = np.log1p(model.baseline.to_numpy())
    np.testing.assert_allclose(got.to_numpy(), z(popularity) + z(cooc), rtol=1e-4, atol=1e-4)
    assert model.predict_online("stranger", interactions={"no-such-item": 1.0}).attrs["strategy"] == "popular"
    popular = ServingPolicy(fresh_users="popularity")
    assert model.predict_online("stranger", interactions=given, policy=popular).attrs["strategy"] == "popular"


def test_the_policy_travels_with_the_model(small, tmp_path):
    _, model = small
    policy = ServingPolicy(warm=Blend(cooc=0.5), features=Blend(popularity=2.0), fresh=Blend(cooc=1.0, popularity=1.0),
                           fold_in=FoldIn("ls", strength=1.5), feature_users="popularity")
    copy = model.clone()
    copy.set_policy(policy)
    copy.save(tmp_path / "m")
    loaded = LFMRecommender.load(tmp_path / "m")
    assert loaded.policy == policy
    user = model.uid_map.index[3]
    np.testing.assert_allclose(loaded.predict_online(user).to_numpy(), copy.predict_online(user).to_numpy(),
                               rtol=1e-6)
    assert loaded.predict_online("x", user_features={"age:25-34": 1.0}).attrs["strategy"] == "popular"
    with pytest.raises(ValueError):
        FoldIn("magic")
    with pytest.raises(ValueError):
        Blend(cooc=-1)


def test_a_known_users_new_interactions_move_its_answer_under_a_policy_that_uses_them(small):
    _, model = small
    user = model.uid_map.index[7]
    given = {"i2": 1.0, "i9": 1.0, "i15": 1.0}
    plain = model.predict_online(user).to_numpy()
    for policy in (ServingPolicy(fold_in=FoldIn("mean", strength=2.0)), ServingPolicy(warm=Blend(cooc=2.0))):
        moved = model.predict_online(user, interactions=given, policy=policy)
        assert moved.attrs["strategy"] == "interactions"
        assert not np.allclose(moved.to_numpy(), plain)
    # the default policy (fold-in off, no warm blend) leaves a known user's scores as LightFM's own
    unchanged = model.predict_online(user, interactions=given)
    assert unchanged.attrs["strategy"] == "personalized"
    np.testing.assert_allclose(unchanged.to_numpy(), plain, rtol=1e-6)


def test_the_ridge_ranker_is_the_same_through_the_sparse_block_search(monkeypatch):
    """Catalogues above RIDGE_DENSE_ITEMS build each item's block by binary search in the CSR rows."""
    import scipy.sparse as sp

    import recommender.model.foldin as foldin

    rng = np.random.default_rng(1)
    x = sp.csr_matrix((rng.random((400, 300)) < 0.05).astype(np.float64))
    dense = ItemNeighbors.ridge(x, 4.0, k=20).matrix.toarray()
    monkeypatch.setattr(foldin, "RIDGE_DENSE_ITEMS", 10)
    sparse = ItemNeighbors.ridge(x, 4.0, k=20).matrix.toarray()
    assert np.count_nonzero(dense) > 1000
    np.testing.assert_allclose(sparse, dense, rtol=1e-6, atol=1e-9)
    # every row keeps its 20 weights of largest magnitude: no request sums more than 20 per history item
    assert max(np.count_nonzero(row) for row in dense) <= 20


def test_a_heavy_user_counts_500_items_in_the_ridge_ranker_as_in_cosine():
    """One user (a bot) with every item would make X'X dense; it counts max_per_user of its items."""
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    x = (rng.random((300, 40)) < 0.1).astype(np.float64)
    heavy = np.vstack([x, np.ones((1, 40))])
    capped = ItemNeighbors.ridge(sp.csr_matrix(heavy), 4.0, k=10, max_per_user=15).matrix.toarray()
    trimmed = heavy.copy()
    trimmed[-1, 15:] = 0.0  # the first 15 of its items, as fit keeps them
    reference = ItemNeighbors.ridge(sp.csr_matrix(trimmed), 4.0, k=10, max_per_user=0).matrix.toarray()
    np.testing.assert_allclose(capped, reference, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("fast", [True, False])
def test_the_weighted_row_sum_equals_a_dense_reference(monkeypatch, fast):
    """The request path's item-item sum (scipy's CSC kernel over the selected rows, or the numpy fallback)
    against a dense product: unsorted positions, repeats, empty rows, the first and the last row."""
    from recommender.model import foldin

    if fast:
        assert foldin._csc_matvec is not None, "scipy no longer has the kernel: requests take the slow path"
    else:
        monkeypatch.setattr(foldin, "_csc_matvec", None)
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(60, 60)) * (rng.random((60, 60)) < 0.2)
    dense[[0, 17, 59]] = 0.0
    dense[17, 5] = 2.0  # row 17 has one entry, row 0 none
    m = ItemNeighbors(__import__("scipy.sparse", fromlist=["csr_matrix"]).csr_matrix(dense)).matrix
    positions = np.array([59, 3, 17, 3, 0, 41, 40, 42, 58], dtype=np.int64)
    weights = rng.random(len(positions)) + 0.1
    got = foldin.weighted_row_sum(m, positions, weights)
    want = weights @ dense[positions]
    assert got.dtype == np.float32 and got.shape == (60,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ItemNeighbors(m).scores(positions, weights), want, rtol=1e-5, atol=1e-5)
    assert not foldin.weighted_row_sum(m, np.zeros(0, dtype=np.int64), np.zeros(0)).any()
    np.testing.assert_allclose(foldin.weighted_row_sum(m, positions.astype(np.int32), weights), want, rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(IndexError):
        foldin.weighted_row_sum(m, np.array([3, -1]), np.ones(2))
    with pytest.raises(IndexError):
        foldin.weighted_row_sum(m, np.array([60]), np.ones(1))
    with pytest.raises(ValueError, match="one weight per position"):
        foldin.weighted_row_sum(m, np.array([3, 4]), np.ones(3))


def test_a_blend_over_restricted_candidates_with_a_new_item_equals_its_reference(small):
    """Candidates restricted to a few known items plus a new item given with features: every part is
    standardised over those candidates only, and the new item has no item-item score (0)."""
    world, model = small
    user = model.uid_map.index[5]
    policy = ServingPolicy(warm=Blend(cooc=0.7))
    items = list(model.iid_map.index)
    chosen = [items[3], items[11], items[0], items[25], items[7]]
    new = {"brand-new": {"genre:drama": 1.0, "decade:1990s": 1.0}}
    got = model.predict_online(user, chosen + ["brand-new"], item_features=new, policy=policy)
    positions = np.array([items.index(i) for i in chosen], dtype=np.int32)
    lightfm = LightFM.predict(model, int(model.uid_map[user]), positions, user_features=model.user_features_,
                              item_features=model.item_features_)
    new_score = model.predict_online(user, ["brand-new"], item_features=new).to_numpy()  # the exact-score path
    history = set(world.interactions.loc[world.interactions["user_id"] == user, "item_id"])
    cooc = cosine_cooccurrence(world.interactions, items)[[items.index(i) for i in history]].sum(axis=0)
    base = np.append(lightfm, new_score)
    item_item = np.append(cooc[positions], 0.0)
    assert list(got.index) == chosen + ["brand-new"]
    np.testing.assert_allclose(got.to_numpy(), z(base) + 0.7 * z(item_item), rtol=1e-4, atol=1e-4)
