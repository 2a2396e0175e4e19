"""Retrain job history (recommender.store.jobs.recent_jobs) against a real Redis."""

from __future__ import annotations

import pytest

from recommender.store import RedisFeatureStore
from recommender.store import jobs


@pytest.fixture
def store(redis_url, key_prefix):
    s = RedisFeatureStore.from_url(redis_url, key_prefix, socket_timeout=5)
    yield s
    s.close()


def finish(store, job_id: str, **fields) -> None:
    """What the trainer does at the end of a job: record it and clear the active marker."""
    jobs.update_job(store, job_id, status="succeeded", **fields)
    jobs.finish_active(store, job_id)


def test_recent_jobs_are_newest_first_with_their_metrics_and_decisions(store):
    submitted = []
    for k in range(3):
        job_id, created = jobs.submit_job(store)
        assert created
        finish(store, job_id, decision="accepted" if k != 1 else "rejected", version=f"v{k}",
               metrics={"precision_at_k": 0.1 * k, "per_population": {"warm": {"precision_at_k": 0.2}}})
        submitted.append(job_id)
    recent = jobs.recent_jobs(store, 10)
    assert [j["job_id"] for j in recent] == submitted[::-1]
    assert [j["decision"] for j in recent] == ["accepted", "rejected", "accepted"]
    assert recent[0]["metrics"] == {"precision_at_k": 0.2, "per_population": {"warm": {"precision_at_k": 0.2}}}
    assert recent[0] == jobs.get_job(store, submitted[-1])  # the same reading as GET /retrain/<id>
    assert [j["job_id"] for j in jobs.recent_jobs(store, 2)] == submitted[:0:-1]


def test_a_trigger_that_joins_the_active_job_adds_nothing_to_the_history(store):
    first, created = jobs.submit_job(store)
    again, created_again = jobs.submit_job(store)
    assert created and not created_again and again == first
    assert [j["job_id"] for j in jobs.recent_jobs(store, 10)] == [first]


def test_the_history_is_capped_and_expired_jobs_are_left_out(store):
    ids = []
    for _ in range(jobs.HISTORY_LENGTH + 3):
        job_id, _ = jobs.submit_job(store)
        finish(store, job_id)
        ids.append(job_id)
    assert store.client.llen(store.keys.retrain_history) == jobs.HISTORY_LENGTH
    newest_first = ids[::-1][:jobs.HISTORY_LENGTH]
    assert [j["job_id"] for j in jobs.recent_jobs(store, 1000)] == newest_first  # at most HISTORY_LENGTH
    store.client.delete(store.keys.job(ids[-2]))  # its record expired (JOB_TTL)
    assert [j["job_id"] for j in jobs.recent_jobs(store, 3)] == [ids[-1], ids[-3]]
    assert jobs.recent_jobs(store, 0) == []
