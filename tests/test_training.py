"""Trainer and watcher against a real Redis: single flight, the evaluation gate, crashes, bad artifacts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from recommender.model.artifacts import publish_model, read_meta
from recommender.errors import LockedError
from recommender.model import LFMRecommender
from recommender.serving import ModelHolder, ModelWatcher
from recommender.store import RedisFeatureStore
from recommender.store.jobs import acquire_lock, current_version, get_job, publish_version, submit_job
from recommender.training import Trainer

from tests.helpers import seed_store, service_settings, small_world


@pytest.fixture
def setup(redis_url, key_prefix, tmp_path):
    settings = service_settings(redis_url, key_prefix, tmp_path / "models", epochs=3, retrain_lock_ttl=10)
    store = seed_store(redis_url, key_prefix, small_world())
    return store, settings


def test_two_trainers_never_train_at_once(setup):
    store, settings = setup
    results, errors = [], []
    barrier = threading.Barrier(2)

    def run():
        trainer = Trainer(RedisFeatureStore.from_url(settings.redis_url, prefix=settings.redis_prefix,
                                                     socket_timeout=10), settings)
        barrier.wait()
        try:
            results.append(trainer.train_and_publish(force=True))
        except LockedError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1 and len(errors) == 1
    versions = [p.name for p in Path(settings.model_dir).iterdir() if not p.name.startswith(".")]
    assert versions == [results[0].version]
    assert current_version(store) == results[0].version


def test_gate_rejects_a_worse_model_unless_forced(setup):
    store, settings = setup
    trainer = Trainer(store, settings)
    first = trainer.train_and_publish(force=True)
    # a serving model that claims a precision no new model can reach
    model = LFMRecommender.load(f"{settings.model_dir}/{first.version}")
    good = publish_model(model, settings.model_dir, extra={"metrics": {"precision_at_k": 0.99}})
    publish_version(store, good)
    rejected = trainer.train_and_publish(force=False)
    assert rejected.decision == "rejected" and rejected.version is None
    assert current_version(store) == good
    forced = trainer.train_and_publish(force=True)
    assert forced.decision == "forced" and current_version(store) == forced.version


def test_jobs_are_single_flight_and_failures_keep_the_old_model(setup, redis_url, key_prefix, tmp_path):
    store, settings = setup
    trainer = Trainer(store, settings)
    first = trainer.train_and_publish(force=True).version
    job, created = submit_job(store, force=True)
    again, created_again = submit_job(store, force=True)
    assert created and not created_again and again == job
    trainer.run_job(store.client.rpop(store.keys.retrain_queue))
    assert get_job(store, job)["status"] == "succeeded"
    assert current_version(store) != first
    serving = current_version(store)

    empty = RedisFeatureStore.from_url(redis_url, prefix=key_prefix + "empty:", socket_timeout=10)
    empty.client.set(empty.keys.model_current, serving)
    broken = Trainer(empty, settings)
    failing, _ = submit_job(empty)
    broken.run_job(empty.client.rpop(empty.keys.retrain_queue))
    job_state = get_job(empty, failing)
    assert job_state["status"] == "failed" and "no interactions" in job_state["error"]
    assert current_version(empty) == serving
    empty.client.delete(*empty.client.keys(key_prefix + "empty:*"))


def test_a_crashed_trainer_leaves_the_lock_to_expire(setup):
    store, settings = setup
    trainer = Trainer(store, settings)
    job, _ = submit_job(store, ttl=settings.retrain_lock_ttl)
    # a trainer that took the lock and the job, then died without cleaning up
    acquire_lock(store, settings.retrain_lock_ttl)
    store.client.hset(store.keys.job(job), mapping={"status": "running", "started_at": time.time() - 60,
                                                    "heartbeat_at": time.time() - 60})
    with pytest.raises(LockedError):
        Trainer(store, settings).train_and_publish(force=True)
    assert get_job(store, job, lock_ttl=settings.retrain_lock_ttl)["status"] == "failed"
    ttl = store.client.ttl(store.keys.retrain_lock)
    assert 0 < ttl <= settings.retrain_lock_ttl
    store.client.pexpire(store.keys.retrain_lock, 1)  # fast-forward the expiry
    time.sleep(0.05)
    assert Trainer(store, settings).train_and_publish(force=True).version


def test_watcher_skips_a_damaged_version_and_keeps_serving(setup):
    store, settings = setup
    first = Trainer(store, settings).train_and_publish(force=True).version
    holder = ModelHolder()
    watcher = ModelWatcher(holder, store, settings.model_dir, interval=0.1)
    watcher.check_once()
    assert holder.snapshot.version == first
    model = holder.snapshot.model
    damaged = publish_model(model, settings.model_dir)
    arrays = f"{settings.model_dir}/{damaged}/arrays.npz"
    data = open(arrays, "rb").read()
    open(arrays, "wb").write(data[:-100])
    publish_version(store, damaged)
    watcher.check_once()
    assert holder.snapshot.version == first and damaged in holder.failed_versions
    foreign = publish_model(model, settings.model_dir)
    meta_path = f"{settings.model_dir}/{foreign}/meta.json"
    meta = json.load(open(meta_path))
    meta["format"] = "pickle-of-something"
    json.dump(meta, open(meta_path, "w"))
    publish_version(store, foreign)
    watcher.check_once()
    assert holder.snapshot.version == first and foreign in holder.failed_versions
    good = publish_model(model, settings.model_dir)
    publish_version(store, good)
    watcher.check_once()
    assert holder.snapshot.version == good


def test_watcher_refreshes_changed_item_features(setup):
    store, settings = setup
    Trainer(store, settings).train_and_publish(force=True)
    holder = ModelHolder()
    watcher = ModelWatcher(holder, store, settings.model_dir, interval=0.1)
    watcher.check_once()
    swaps = holder.swaps
    assert "late-item" not in holder.snapshot.items.extra_ids
    store.set_item_features("late-item", {"genre:drama": 1.0})
    watcher.check_once()
    assert "late-item" in holder.snapshot.items.extra_ids and holder.swaps == swaps + 1
    watcher.check_once()  # nothing changed: no new snapshot
    assert holder.swaps == swaps + 1


def test_trainer_publishes_a_checksummed_ann_index_when_asked(setup):
    store, settings = setup
    settings = settings.with_(ann_index=True, ann_min_items=1, ann_ef_search=200)
    version = Trainer(store, settings).train_and_publish(force=True).version
    model = LFMRecommender.load(Path(settings.model_dir) / version)
    assert model.ann_index is not None and model.ann_index.n == model.n_items
    assert model.ann_index.ef_search == 200  # recall 1.0 at the first breadth: no need to widen
    metrics = read_meta(Path(settings.model_dir) / version)["extra"]["metrics"]
    assert metrics["ann_ef_search"] == 200 and metrics["ann_recall_curve"] == [[200, 1.0]]
    assert metrics["ann_recall_at_10"] == 1.0 and metrics["ann_recall_users"] == min(200, model.n_users)
    user = model.uid_map.index[0]
    approx, exact = model.recommend(user, 10, approximate=True), model.recommend(user, 10)
    assert [i for i, _ in approx] == [i for i, _ in exact]
    assert [s for _, s in approx] == pytest.approx([s for _, s in exact], abs=1e-5)
    index_file = Path(settings.model_dir) / version / "ann.faiss"
    index_file.write_bytes(index_file.read_bytes()[:-16])
    from recommender.errors import ArtifactError

    with pytest.raises(ArtifactError, match="checksum"):
        LFMRecommender.load(Path(settings.model_dir) / version)


def test_without_a_recall_target_the_index_keeps_its_breadth_and_reports_its_recall(setup):
    store, settings = setup
    settings = settings.with_(ann_index=True, ann_min_items=1, ann_ef_search=7, ann_target_recall=0.0)
    version = Trainer(store, settings).train_and_publish(force=True).version
    model = LFMRecommender.load(Path(settings.model_dir) / version)
    metrics = read_meta(Path(settings.model_dir) / version)["extra"]["metrics"]
    assert model.ann_index.ef_search == 7 and metrics["ann_ef_search"] == 7 and metrics["ann_recall_curve"] == []
    assert 0.0 < metrics["ann_recall_at_10"] <= 1.0


def test_gate_rejects_a_candidate_below_popularity_on_the_same_held_out_data(setup):
    store, settings = setup
    first = Trainer(store, settings).train_and_publish(force=True)
    assert first.metrics["precision_at_k"] > first.metrics["baseline_precision_at_k"]  # a sound model
    # a serving model with a low recorded precision, so only the baseline check can stop the candidate
    model = LFMRecommender.load(f"{settings.model_dir}/{first.version}")
    serving = publish_model(model, settings.model_dir, extra={"metrics": {"precision_at_k": 0.0}})
    publish_version(store, serving)
    broken = settings.with_(learning_rate=1e-7, epochs=1, blends=False)  # learns nothing: below popularity
    rejected = Trainer(store, broken).train_and_publish(force=False)
    assert rejected.decision == "rejected" and current_version(store) == serving
    assert rejected.metrics["precision_at_k"] < rejected.metrics["baseline_precision_at_k"]
    assert "popularity" in rejected.metrics["rejected_because"]
    allowed = Trainer(store, broken.with_(eval_beat_baseline=False)).train_and_publish(force=False)
    assert allowed.decision == "accepted" and current_version(store) == allowed.version
