"""Hot swap under load: requests/s and p99 in 1-second buckets across a retrain and swap.

Starts a private Redis (unless --redis-url), loads the demo data, publishes a model, starts gunicorn
with the trainer running inside the app, then keeps several clients requesting /recommend while a
forced retrain trains, publishes, and every worker swaps. Target: zero failed requests.

    .venv/bin/python bench/bench_swap.py [--clients 8] [--before 5] [--after 8]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import requests


from recommender.bootstrap import ensure_demo_data
from benchlib import bench_redis
from recommender.settings import Settings
from recommender.store import RedisFeatureStore
from recommender.training import Trainer
from recommender.launch import start_gunicorn

TOKEN = "bench-admin-token-0123456789"


def main() -> int:
    """Run the load across a retrain, then print and write the per-second table and plot."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--before", type=float, default=5.0, help="seconds of load before the retrain")
    p.add_argument("--after", type=float, default=8.0, help="seconds of load after every worker swapped")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--redis-url", default=None)
    p.add_argument("--out", default="var/reports/bench_swap",
                   help="report path without suffix (pass docs/bench_swap to update the docs)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    redis_server, url = bench_redis(tmp, args.redis_url)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    settings = Settings(redis_url=url, redis_prefix=prefix, model_dir=str(tmp / "models"), admin_token=TOKEN,
                        trainer_in_app=True, watch_interval=1.0).validated()
    store = RedisFeatureStore.from_url(url, prefix=prefix, socket_timeout=30)
    service = None
    events: list[tuple[float, str]] = []
    samples: list[tuple[float, float, int, str]] = []  # (t, latency s, status, version)
    lock = threading.Lock()
    stop = threading.Event()
    try:
        print("loading demo data and training the first model ...", flush=True)
        ensure_demo_data(store)
        first = Trainer(store, settings).train_and_publish(force=True).version
        service = start_gunicorn(settings, tmp, args.workers, args.threads)
        t0 = time.monotonic()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            session = requests.Session()
            while not stop.is_set():
                started = time.monotonic()
                try:
                    r = session.get(f"{service.base}/recommend/u{rng.randint(1, 3000)}?n=10", timeout=10)
                    version = r.json().get("model_version", "") if r.status_code == 200 else ""
                    status = r.status_code
                except Exception as exc:
                    status, version = 0, repr(exc)[:80]
                done = time.monotonic()
                with lock:
                    samples.append((done - t0, done - started, status, version))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(args.before)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        job = requests.post(service.base + "/retrain", json={"force": True}, headers=auth, timeout=5).json()["job_id"]
        events.append((time.monotonic() - t0, "retrain requested"))
        print(f"retrain job {job} queued at t={events[-1][0]:.1f}s", flush=True)
        new = None
        while new is None and time.monotonic() - t0 < 600:
            state = requests.get(f"{service.base}/retrain/{job}", headers=auth, timeout=5).json()
            if state["status"] == "succeeded":
                new = state["version"]
                events.append((time.monotonic() - t0, "published"))
            elif state["status"] == "failed":
                raise SystemExit(f"retrain failed: {state}")
            time.sleep(0.2)
        while True:
            with lock:
                recent = [v for t, _, s, v in samples[-200:] if s == 200]
            if recent and all(v == new for v in recent[-50:]):
                events.append((time.monotonic() - t0, "all answers from the new version"))
                break
            time.sleep(0.2)
        time.sleep(args.after)
    finally:
        stop.set()
        time.sleep(0.5)
        if service:
            service.stop()
        if redis_server:
            redis_server.stop()
    report(samples, events, first, args)
    failed = sum(1 for s in samples if s[2] != 200)
    return 1 if failed else 0


def report(samples, events, first, args) -> None:
    """Per-second table, markdown and PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = int(max(t for t, *_ in samples)) + 1
    rows = []
    for sec in range(end):
        chunk = [s for s in samples if sec <= s[0] < sec + 1]
        ok = [s for s in chunk if s[2] == 200]
        lat = np.asarray([s[1] for s in chunk]) * 1000 if chunk else np.zeros(1)
        versions = sorted({s[3][-8:] for s in ok})
        rows.append((sec, len(chunk), len(chunk) - len(ok), float(np.percentile(lat, 99)), float(np.median(lat)),
                     "+".join(versions)))
    failed = sum(r[2] for r in rows)
    lines = ["# Hot swap under load (`bench/bench_swap.py`)", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores; gunicorn {args.workers} workers x "
             f"{args.threads} threads with the trainer as a thread of the app (the one-machine default, so "
             f"training competes with serving for the CPU); {args.clients} Python clients on the same machine; "
             f"demo data. Events: " + "; ".join(f"{name} at {t:.1f} s" for t, name in events) + ".", "",
             f"Total requests {len(samples)}, failed **{failed}**.", "",
             "| second | requests | failed | p50 ms | p99 ms | versions answering |", "|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {s} | {n} | {f} | {p50:.1f} | {p99:.1f} | {v} |" for s, n, f, p99, p50, v in rows]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".md").write_text(text)
    print(text)
    fig, ax1 = plt.subplots(figsize=(10, 4))
    secs = [r[0] for r in rows]
    ax1.bar(secs, [r[1] for r in rows], color="#9ecae1", label="requests/s")
    ax1.bar(secs, [r[2] for r in rows], color="red", label="failed/s")
    ax1.set(xlabel="seconds", ylabel="requests per second")
    ax2 = ax1.twinx()
    ax2.plot(secs, [r[3] for r in rows], "k.-", label="p99 ms")
    ax2.set(ylabel="p99 latency (ms)")
    for t, name in events:
        ax1.axvline(t, ls="--", color="gray", lw=0.8)
        ax1.text(t, ax1.get_ylim()[1] * 0.95, name, rotation=90, va="top", ha="right", fontsize=8)
    ax1.legend(loc="upper left")
    ax2.legend(loc="upper right")
    ax1.set_title(f"Retrain and hot swap under load: {failed} failed of {len(samples)} requests")
    fig.tight_layout()
    fig.savefig(Path(args.out).with_suffix(".png"), dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
