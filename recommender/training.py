"""Retraining: jobs in Redis, a single-flight lock, an evaluation gate, and atomic publication.

Jobs, the lock and the model pointer live in Redis (recommender.store.jobs). ``Trainer`` takes jobs from
the queue, trains a *fresh* model from the store's snapshot (never the object that is serving), evaluates
it on a held-out temporal slice, and publishes it when it is not worse than the serving model beyond a
tolerance, or when the job is forced. The same code runs as its own process (``python -m
recommender.trainer``) or as a thread of the app.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from .errors import LockedError
from .model import LFMRecommender
from .model.artifact_store import ArtifactStore, artifact_store_from_settings
from .model.artifacts import ANN_FILE
from .online import pointer_of
from .selection import select_with_settings, validation_split
from .settings import Settings
from .store import jobs

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 20  # when there is too little data to choose the number of epochs by validation


def _release_freed_memory() -> None:
    """Give memory freed after training back to the OS (glibc keeps it otherwise).

    When the trainer runs inside an app process, a training peak would otherwise stay in that
    process's RSS for good; the soak test showed about 10 MiB of growth per retrain without this.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


@dataclass
class TrainResult:
    """What one training run produced."""

    version: str | None
    published: bool
    decision: str
    metrics: dict


class Trainer:
    """Trains, evaluates and publishes models; one at a time across all processes (Redis lock).

    ``artifacts`` is where versions are published (default: the store the settings name, a directory or
    an object store).
    """

    def __init__(self, store, settings: Settings, on_result=None, artifacts: ArtifactStore | None = None) -> None:
        self.store = store
        self.settings = settings
        self.artifacts = artifacts if artifacts is not None else artifact_store_from_settings(settings)
        self.on_result = on_result  # called with (seconds, outcome) after every run
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- the lock

    def _heartbeat(self, token: str, job_id: str | None, progress: str) -> None:
        """Refresh the lock (LockedError if it was lost) and record progress in the job."""
        jobs.refresh_lock(self.store, token, self.settings.retrain_lock_ttl)
        if job_id:
            jobs.update_job(self.store, job_id, heartbeat_at=time.time(), progress=progress)

    # -------------------------------------------------------------- one run

    def train_and_publish(self, *, force: bool = False, job_id: str | None = None,
                          verbose: bool = False) -> TrainResult:
        """Snapshot, train a fresh model, evaluate, maybe publish. Raises LockedError if another run holds the lock."""
        token = jobs.acquire_lock(self.store, self.settings.retrain_lock_ttl)
        started = time.monotonic()
        outcome = "error"
        try:
            taken_at = time.time()  # item changes after this are picked up by the watchers' overlay
            snapshot = self.store.snapshot()
            if len(snapshot.interactions) == 0:
                raise ValueError("there are no interactions in the store to train on")
            variants = self.settings.variant_list
            results = {}
            for variant in variants:  # each A/B variant: its own settings, model and pointer
                results[variant.name] = self._run(token, force, job_id, verbose, snapshot, taken_at,
                                                  self.settings.for_variant(variant), pointer_of(variant))
            result = results[variants[0].name]
            if len(variants) > 1:
                result.metrics["variants"] = {name: {"version": r.version, "decision": r.decision,
                                                     "precision_at_k": r.metrics.get("precision_at_k")}
                                              for name, r in results.items()}
            outcome = result.decision
            return result
        finally:
            jobs.release_lock(self.store, token)
            _release_freed_memory()
            if self.on_result:
                self.on_result(time.monotonic() - started, outcome)

    def _run(self, token: str, force: bool, job_id: str | None, verbose: bool, snapshot, taken_at: float,
             s: Settings, pointer: str | None) -> TrainResult:
        """Select, gate, train and publish one model from ``snapshot`` with settings ``s``, for ``pointer``."""
        started = time.time()
        k = s.eval_k

        def progress(stage: str):
            def report(epoch: int, total: int) -> None:
                self._heartbeat(token, job_id, f"{stage}: epoch {epoch}/{total}")
                if verbose:
                    print(f"  {stage}: epoch {epoch}/{total}", file=sys.stderr, flush=True)
            return report

        def selecting(message: str) -> None:
            self._heartbeat(token, job_id, message)
            if verbose:
                print(f"  {message}", file=sys.stderr, flush=True)

        metrics: dict = {"interactions": int(len(snapshot.interactions)), "eval_k": k,
                         "skipped_records": snapshot.skipped}
        split = validation_split(snapshot.interactions, snapshot.user_features, snapshot.item_features,
                                 seed=s.random_state or 0)
        params = s.model_params()
        if len(split.scenarios["warm"].test):
            chosen = select_with_settings(split, s, params, progress=selecting)
            warm = chosen.populations.get("warm_users", {})
            metrics.update(precision_at_k=warm.get(f"precision@{k}"),
                           baseline_precision_at_k=warm.get(f"popularity_precision@{k}"),
                           eval_users=warm.get("users"), selection=chosen.metrics())
            row_norm, epochs, policy = chosen.row_norm, chosen.epochs, chosen.policy
        else:  # too little data to hold anything out: the fixed or default configuration, unvalidated
            row_norm, epochs, policy = s.row_norms[0], s.fixed_epochs or DEFAULT_EPOCHS, None
        serving = self._serving_metrics(pointer)
        metrics["serving_precision_at_k"] = serving
        decision = "forced" if force else "accepted"
        reason = self._gate(metrics, serving) if not force else None
        if reason:
            decision = "rejected"
            metrics["rejected_because"] = reason
            log.warning("new model rejected: %s", reason)
            return TrainResult(None, False, decision, metrics)
        final = LFMRecommender(row_norm=row_norm, **params)
        if policy is not None:  # before fit: fit builds the item-item ranker the policy asks for, once
            final.set_policy(policy)
        final.fit(snapshot.interactions, snapshot.user_features, snapshot.item_features, epochs=epochs,
                  num_threads=s.train_threads, callback=progress("final model"))
        metrics["train_seconds"] = round(time.time() - started, 3)
        self._heartbeat(token, job_id, "publishing")
        extra_files = {}
        if s.ann_index and final.n_items >= s.ann_min_items:
            from .model.ann import AnnIndex

            self._heartbeat(token, job_id, "building the approximate index")
            built = time.monotonic()
            index = AnnIndex.build(final.index.item_matrix, ef_search=s.ann_ef_search, threads=s.train_threads)
            metrics["ann_build_seconds"] = round(time.monotonic() - built, 2)
            metrics.update(self._tune_index(final, index, token, job_id))
            extra_files[ANN_FILE] = index.save
        version = self.artifacts.publish(final, extra={
            "metrics": metrics, "trained_at": time.time(), "data_snapshot_at": taken_at,
            "n_users": final.n_users, "n_items": final.n_items,
            "ann_ef_search": metrics.get("ann_ef_search", s.ann_ef_search)},
            extra_files=extra_files)
        jobs.publish_version(self.store, version, pointer)  # the pointer moves last: every object is in place
        log.info("published model %s (%s): %s", version, decision, metrics)
        self._prune(version)
        return TrainResult(version, True, decision, metrics)

    def _tune_index(self, model: LFMRecommender, index, token: str, job_id: str | None) -> dict:
        """Measure the index's serving recall@10 against exact scoring on up to 200 known users and widen
        its search (doubling ef_search up to 2048, see ann.tune_ef_search) until ANN_TARGET_RECALL is
        reached; the figures go into the model's metrics. The index is published either way (with a
        warning when the target is out of reach): exact scoring stays one setting away (ANN_INDEX=false).
        """
        from .model.ann import exact_thresholds, serving_recall, tune_ef_search

        s = self.settings
        self._heartbeat(token, job_id, "measuring the approximate index's recall")
        rng = np.random.default_rng(0)
        users = rng.choice(model.n_users, size=min(200, model.n_users), replace=False)
        queries = model.index.user_query_rows[users]
        started = time.monotonic()
        if s.ann_target_recall > 0:
            ef, recall, curve = tune_ef_search(index, model.index.item_matrix, queries, target=s.ann_target_recall,
                                               start=s.ann_ef_search)
        else:
            ef, curve = s.ann_ef_search, []
            recall = serving_recall(index, queries, exact_thresholds(model.index.item_matrix, queries, 10))
        out = {"ann_ef_search": ef, "ann_recall_at_10": round(recall, 4), "ann_recall_users": int(len(users)),
               "ann_recall_curve": [[e, round(r, 4)] for e, r in curve],
               "ann_tune_seconds": round(time.monotonic() - started, 2)}
        if recall < s.ann_target_recall:
            log.warning("approximate index: recall@10 %.3f at ef_search %d is below ANN_TARGET_RECALL %.2f; "
                        "published anyway (set ANN_INDEX=false for exact answers)", recall, ef, s.ann_target_recall)
        else:
            log.info("approximate index: recall@10 %.3f at ef_search %d", recall, ef)
        return out

    def _gate(self, metrics: dict, serving: float | None) -> str | None:
        """Why the candidate must not replace the serving model, or None to publish it.

        Only with a model already serving (the first model is always published: without one nothing
        can answer, not even popularity). Two checks on the candidate's held-out precision@k: not more
        than EVAL_TOLERANCE below what the serving model measured when it was published, and (with
        EVAL_BEAT_BASELINE) not below the popularity baseline on the very same held-out interactions,
        the one comparison free of any difference in test data.
        """
        s = self.settings
        k, precision = s.eval_k, metrics.get("precision_at_k")
        if serving is None or precision is None:
            return None
        if precision < serving - s.eval_tolerance:
            return f"precision@{k} {precision:.4f} < serving model's {serving:.4f} - {s.eval_tolerance:.3f}"
        baseline = metrics.get("baseline_precision_at_k")
        if s.eval_beat_baseline and baseline is not None and precision < baseline:
            return f"precision@{k} {precision:.4f} < popularity's {baseline:.4f} on the same held-out interactions"
        return None

    def _prune(self, published: str) -> None:
        """Keep MODEL_RETENTION versions, never a published one (of any variant) nor ``published``; a failure is logged
        and does not fail the run (the model is out)."""
        if not self.settings.model_retention:
            return
        try:
            serving = {jobs.current_version(self.store, pointer_of(v)) for v in self.settings.variant_list}
            gone = self.artifacts.prune(protect={published, *serving})
        except Exception as exc:  # noqa: BLE001 - pruning is housekeeping; the next publish tries again
            log.warning("could not prune old model versions in %s: %s", self.artifacts.location, exc)
            return
        if gone:
            log.info("pruned %d old model version(s) from %s: %s", len(gone), self.artifacts.location, ", ".join(gone))

    def _serving_metrics(self, pointer: str | None = None) -> float | None:
        """precision@k recorded when the serving model was published (evaluated on its own held-out slice)."""
        version = jobs.current_version(self.store, pointer)
        if not version:
            return None
        try:
            meta = self.artifacts.read_meta(version)
        except Exception:  # the serving artifact is unreadable: nothing to compare against
            return None
        return meta.get("extra", {}).get("metrics", {}).get("precision_at_k")

    # -------------------------------------------------------------- the job loop

    def run_job(self, job_id: str) -> None:
        """Run one queued job and record its outcome in Redis. Never raises (errors go into the job)."""
        store = self.store
        job = jobs.get_job(store, job_id)
        if job is None:
            return
        jobs.update_job(store, job_id, status="running", started_at=time.time(), heartbeat_at=time.time())
        try:
            result = self.train_and_publish(force=job["force"], job_id=job_id)
            fields = {"status": "succeeded", "decision": result.decision, "metrics": result.metrics,
                      "finished_at": time.time(), "progress": "done"}  # not the last stage's "publishing"
            if result.version:
                fields["version"] = result.version
            jobs.update_job(store, job_id, **fields)
        except LockedError:
            # another trainer is busy: put the job back for later instead of training twice at once
            jobs.requeue_job(store, job_id)
            time.sleep(1.0)
        except Exception as exc:
            log.exception("retrain job %s failed", job_id)
            try:
                jobs.update_job(store, job_id, status="failed", error=f"{type(exc).__name__}: {exc}",
                                finished_at=time.time())
            except Exception:
                log.exception("could not record the failure of job %s", job_id)
        finally:
            try:
                jobs.finish_active(store, job_id)
            except Exception:  # noqa: BLE001 - the marker expires by itself
                pass

    def loop(self, poll: float = 1.0) -> None:
        """Take jobs from the queue until stopped; survives Redis outages."""
        while not self._stop.is_set():
            try:
                job_id = jobs.next_job(self.store)
            except Exception as exc:  # Redis down: wait and retry
                log.warning("trainer: cannot read the job queue: %s", exc)
                job_id = None
            if job_id:
                self.run_job(job_id)
            else:
                self._stop.wait(poll)

    def start(self) -> "Trainer":
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(target=self.loop, name="trainer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop after the current job, waiting up to ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=timeout)
