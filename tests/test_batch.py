"""Batch recommendations: the same answers as one by one, from the library, the service and the console script."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from recommender.batch import batch_recommend
from recommender.model.foldin import Blend, ServingPolicy
from recommender.service import RecommendationService
from recommender.serving import ModelHolder, build_snapshot, load_checked
from recommender.store.jobs import current_version
from tests.helpers import publish_first_model, seed_store, service_settings, small_world


@pytest.fixture(scope="module")
def world():
    return small_world()


@pytest.fixture
def env(redis_url, key_prefix, tmp_path, world):
    settings = service_settings(redis_url, key_prefix, tmp_path / "models")
    store = seed_store(redis_url, key_prefix, world)
    version = publish_first_model(store, settings)
    store.remove_item(world.interactions["item_id"].value_counts().index[0])  # the most popular leaves
    snap = build_snapshot(store, load_checked(settings.model_dir, version), version)
    return settings, store, snap


@pytest.mark.parametrize("policy", [None, ServingPolicy(warm=Blend(cooc=1.0, popularity=0.5))],
                         ids=["lightfm", "blended"])
def test_batch_equals_recommend_for_every_user(env, policy):
    settings, store, snap = env
    if policy is not None:
        snap.model.set_policy(policy)
    holder = ModelHolder()
    holder.swap(snap)
    service = RecommendationService(settings, store, store, holder, watcher=None)
    blocks = list(batch_recommend(snap, 7, store=store, max_block_cells=snap.items.n_candidates * 64))
    assert len(blocks) > 1  # several blocks of 64 users
    answers = {u: items for b in blocks for u, items in zip(b.users, b.items)}
    assert set(answers) == set(snap.model.uid_map.index)
    for user in sorted(answers)[::17]:
        expected = service.recommend(user, 7)
        assert [i for i, _ in answers[user]] == [i for i, _ in expected.items], user
        assert [s for _, s in answers[user]] == pytest.approx([s for _, s in expected.items], rel=1e-4, abs=1e-4)
        _, seen, _ = store.get_user(user)
        library = snap.model.recommend(user, 7, item_features=snap.items, exclude=seen)
        assert [i for i, _ in answers[user]] == [i for i, _ in library]


def test_listed_users_and_the_console_script(env, tmp_path, redis_url, key_prefix):
    settings, store, snap = env
    skipped: list = []
    users = list(snap.model.uid_map.index[:3]) + ["nobody-known"]
    blocks = list(batch_recommend(snap, 5, users, store=store, skipped=skipped))
    assert [u for b in blocks for u in b.users] == users[:3] and skipped == ["nobody-known"]
    out = tmp_path / "recs.csv"
    env_vars = {"REDIS_URL": redis_url, "REDIS_PREFIX": key_prefix, "MODEL_DIR": settings.model_dir,
                "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run([str(Path(sys.executable).parent / "reco-batch"), "--out", str(out), "--n", "5",
                             "--redis"], env=env_vars, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 * snap.model.n_users and rows[0].keys() == {"user_id", "rank", "item_id", "score"}
    first = users[0]
    mine = [r["item_id"] for r in rows if r["user_id"] == first]
    assert mine == [i for i, _ in blocks[0].items[0]]
    stored = store.client.get(store.keys.user_batch(first))
    assert stored and current_version(store) in stored and mine[0] in stored
    assert store.erase_user(first)["features"] == 1 and store.client.get(store.keys.user_batch(first)) is None
