"""Retrain jobs, the single-flight training lock, and the model pointer, in Redis.

- ``submit_job`` records a job and queues it, or returns the job already queued or running: SET NX on
  ``{retrain}:active`` makes "is one active?" and "I am the active one" one atomic step.
- The lock (``{retrain}:lock``) is SET NX with a TTL; the trainer refreshes it every epoch and deletes it
  only while it still holds it (compare-and-delete in Lua), so a crashed trainer's lock expires and an
  expired-and-retaken lock is never deleted by its previous owner.
- The model pointer (``model:current``) names the published version; serving processes poll it.
- ``{retrain}:history`` lists the newest ``HISTORY_LENGTH`` job ids, newest first, written with the job in
  the same transaction; ``recent_jobs`` reads it (ids whose record expired are left out).

On a Redis Cluster every one of these is an operation on one key (or, for a job's record and the queue,
keys that share the ``{retrain}`` slot), executed by the one master that owns the slot: SET NX, the Lua
compare-and-delete and RPOP are exactly as atomic as on a single Redis, so the guarantees above hold
unchanged. What a cluster adds is failover: replication is asynchronous, so a lock or marker acknowledged
by a master that dies before its replica received it is gone after the promotion, and a second trainer
may then train at the same time (both publish immutable versions; the pointer names the last one) and a
second trigger may queue a second job. Nothing is corrupted; at worst one retrain runs twice.

Every function raises StoreUnavailableError when Redis fails (recommender.store.connection.store_errors).
"""

from __future__ import annotations

import json
import time
import uuid

from ..errors import LockedError
from .connection import run_atomic, store_errors

JOB_TTL = 7 * 24 * 3600  # seconds a job's record is kept
HISTORY_LENGTH = 100  # job ids kept in retrain:history (the most GET /retrain?limit= can answer)
_DELETE_IF_OWNER = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_EXPIRE_IF_OWNER = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) "
                    "else return 0 end")


@store_errors
def submit_job(store, *, force: bool = False, ttl: int = 600) -> tuple[str, bool]:
    """Queue a retrain job and return (job_id, created); an active job is returned instead of a new one."""
    keys = store.keys
    job_id = uuid.uuid4().hex[:16]
    if not store.client.set(keys.retrain_active, job_id, nx=True, ex=ttl + 3600):
        existing = store.client.get(keys.retrain_active)
        if existing:
            job = get_job(store, existing, lock_ttl=ttl)
            if job is not None and job["status"] in ("queued", "running"):
                return existing, False
        store.client.set(keys.retrain_active, job_id, ex=ttl + 3600)
    # the job's record, the queue and the history share a slot ({retrain}): one MULTI on a cluster too
    run_atomic(store.client, [("HSET", keys.job(job_id), "status", "queued", "force", int(force),
                               "created_at", time.time()),
                              ("EXPIRE", keys.job(job_id), JOB_TTL), ("LPUSH", keys.retrain_queue, job_id),
                              ("LPUSH", keys.retrain_history, job_id),
                              ("LTRIM", keys.retrain_history, 0, HISTORY_LENGTH - 1)])
    return job_id, True


@store_errors
def get_job(store, job_id: str, lock_ttl: int = 600) -> dict | None:
    """A job's status dict, or None. A running job whose trainer stopped heartbeating reads as failed."""
    return _job(job_id, store.client.hgetall(store.keys.job(job_id)), lock_ttl)


@store_errors
def recent_jobs(store, limit: int, lock_ttl: int = 600) -> list[dict]:
    """The ``limit`` newest jobs (at most HISTORY_LENGTH), newest first, as :func:`get_job` reads them.

    Two round trips: the ids, then every record in one pipeline. A job whose record expired (JOB_TTL) is
    left out, so fewer than ``limit`` may come back.
    """
    if limit < 1:
        return []
    job_ids = store.client.lrange(store.keys.retrain_history, 0, min(limit, HISTORY_LENGTH) - 1)
    if not job_ids:
        return []
    with store.client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hgetall(store.keys.job(job_id))
        records = pipe.execute()
    jobs = (_job(job_id, raw, lock_ttl) for job_id, raw in zip(job_ids, records))
    return [job for job in jobs if job is not None]


def _job(job_id: str, raw: dict, lock_ttl: int) -> dict | None:
    """A job's record (HGETALL reply) as its status dict; None for an empty reply (no such job)."""
    if not raw:
        return None
    job = {"job_id": job_id, "status": raw.get("status"), "force": raw.get("force") == "1"}
    for name in ("created_at", "started_at", "finished_at", "heartbeat_at"):
        if name in raw:
            job[name] = float(raw[name])
    for name in ("version", "error", "decision", "progress"):
        if name in raw:
            job[name] = raw[name]
    if "metrics" in raw:
        job["metrics"] = json.loads(raw["metrics"])
    if job["status"] == "running" and time.time() - job.get("heartbeat_at", job.get("started_at", 0)) > lock_ttl:
        job["status"] = "failed"
        job["error"] = "the trainer stopped responding (crashed or was killed); its lock expired"
    return job


@store_errors
def update_job(store, job_id: str, **fields) -> None:
    """Set fields of a job's record (``metrics`` is stored as JSON)."""
    if "metrics" in fields:
        fields["metrics"] = json.dumps(fields["metrics"])
    store.client.hset(store.keys.job(job_id), mapping=fields)


@store_errors
def next_job(store) -> str | None:
    """Take the oldest queued job id, or None."""
    # RPOP and sleep rather than BRPOP: blocking reads would fight the short socket timeouts
    return store.client.rpop(store.keys.retrain_queue)


@store_errors
def requeue_job(store, job_id: str) -> None:
    """Put a job back at the end of the queue (another trainer held the lock)."""
    update_job(store, job_id, status="queued")
    store.client.rpush(store.keys.retrain_queue, job_id)


@store_errors
def finish_active(store, job_id: str) -> None:
    """Clear the active-job marker if it still names this job."""
    store.client.eval(_DELETE_IF_OWNER, 1, store.keys.retrain_active, job_id)


@store_errors
def acquire_lock(store, ttl: int) -> str:
    """Take the single-flight training lock for ``ttl`` seconds; returns the owner token.

    Raises
    ------
    LockedError
        Another trainer holds it.
    """
    token = uuid.uuid4().hex
    if not store.client.set(store.keys.retrain_lock, token, nx=True, ex=ttl):
        raise LockedError("another trainer holds the retrain lock")
    return token


@store_errors
def refresh_lock(store, token: str, ttl: int) -> None:
    """Extend the lock we hold by ``ttl`` seconds; LockedError if it expired and is no longer ours."""
    if not store.client.eval(_EXPIRE_IF_OWNER, 1, store.keys.retrain_lock, token, ttl):
        raise LockedError("lost the retrain lock (it expired); abandoning this run")


@store_errors
def release_lock(store, token: str) -> None:
    """Delete the lock if it is still ours."""
    store.client.eval(_DELETE_IF_OWNER, 1, store.keys.retrain_lock, token)


@store_errors
def current_version(store, variant: str | None = None) -> str | None:
    """The published model version id (of an A/B variant; of the one model when None), or None."""
    return store.client.get(store.keys.model_pointer(variant))


@store_errors
def publish_version(store, version: str, variant: str | None = None) -> None:
    """Point every serving process at ``version`` (they poll the pointer, see recommender.serving)."""
    store.client.set(store.keys.model_pointer(variant), version)
