"""Soak test (not in CI): a mixed load against a running service for a set time.

Recommendations from several clients, feature writes, interaction posts and periodic forced
retrains, all at once. Reports errors, latency percentiles per operation, model versions seen, and
the memory (RSS) growth of the gunicorn workers.

    make run                                    # in one terminal (prints the admin token)
    .venv/bin/python bench/soak.py --base http://localhost:8000 --token TOKEN --minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import requests


def gunicorn_workers(port: int | None = None) -> dict[int, int]:
    """pid -> RSS in KiB of local gunicorn processes running the project's config (on ``port``, when
    given: other gunicorns of the project, e.g. a test run's, are left out)."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if port is not None:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                env = dict(v.split(b"=", 1) for v in environ if b"=" in v)
                if int(env.get(b"PORT", b"8000")) != port:  # 8000: the config's default
                    continue
            if "gunicorn" in cmd and "gunicorn_conf" in cmd:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        found[int(pid)] = int(line.split()[1])
        except OSError:
            continue
    return found


def main() -> int:
    """Run the load, print and write the report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="http://127.0.0.1:8000")
    p.add_argument("--token", default=os.environ.get("ADMIN_TOKEN"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--retrain-every", type=float, default=120.0, help="seconds between forced retrains")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--out", default="var/reports/SOAK.md",
                   help="report path (pass docs/SOAK.md to update the docs)")
    args = p.parse_args()
    if not args.token:
        p.error("--token (or ADMIN_TOKEN) is required for the write and retrain parts of the load")
    auth = {"Authorization": f"Bearer {args.token}"}
    deadline = time.monotonic() + args.minutes * 60
    lock = threading.Lock()
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, Counter] = defaultdict(Counter)
    errors: list[str] = []
    versions: Counter = Counter()
    rng_seed = [0]

    def record(op: str, started: float, status: int, detail: str = "") -> None:
        with lock:
            latencies[op].append(time.perf_counter() - started)
            statuses[op][status] += 1
            if status == 0 or status >= 500:
                errors.append(f"{op}: {status} {detail[:200]}")

    def call(op: str, session: requests.Session, method: str, url: str, **kw):
        started = time.perf_counter()
        try:
            r = session.request(method, args.base + url, timeout=10, **kw)
            record(op, started, r.status_code, r.text if r.status_code >= 500 else "")
            return r
        except requests.RequestException as exc:
            record(op, started, 0, repr(exc))
            return None

    def recommender():
        with lock:
            rng_seed[0] += 1
            rng = random.Random(rng_seed[0])
        s = requests.Session()
        while time.monotonic() < deadline:
            user = f"u{rng.randint(1, args.users)}" if rng.random() < 0.9 else f"anon-{rng.randint(1, 10**6)}"
            r = call("recommend", s, "GET", f"/recommend/{user}?n=10")
            if r is not None and r.status_code == 200:
                with lock:
                    versions[r.json()["model_version"]] += 1

    def writer():
        rng = random.Random(99)
        s = requests.Session()
        genres = ["action", "comedy", "drama", "horror", "romance", "scifi", "documentary", "animation"]
        while time.monotonic() < deadline:
            g = rng.choice(genres)
            if rng.random() < 0.5:
                call("put_user", s, "PUT", f"/users/soak-user-{rng.randint(1, 500)}/features",
                     json={f"interest:{g}": 1.0, "age:25-34": 1.0}, headers=auth)
            else:
                call("put_item", s, "PUT", f"/items/soak-item-{rng.randint(1, 200)}/features",
                     json={f"genre:{g}": 1.0, f"tag:{g}-0": 1.0}, headers=auth)
            call("interactions", s, "POST", "/interactions", headers=auth,
                 json=[{"user_id": f"u{rng.randint(1, args.users)}", "item_id": f"i{rng.randint(1, args.items)}",
                        "weight": float(rng.randint(1, 5))} for _ in range(5)])
            time.sleep(0.05)

    def retrainer():
        s = requests.Session()
        next_at = time.monotonic() + args.retrain_every / 2
        while time.monotonic() < deadline:
            if time.monotonic() >= next_at:
                call("retrain", s, "POST", "/retrain", json={"force": True}, headers=auth)
                next_at += args.retrain_every
            time.sleep(0.5)

    port = urlparse(args.base).port or 80
    rss_start = gunicorn_workers(port)
    rss_samples = [(0.0, sum(rss_start.values()))]
    threads = [threading.Thread(target=recommender) for _ in range(args.clients)]
    threads += [threading.Thread(target=writer), threading.Thread(target=retrainer)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(10)
        rss_samples.append((time.monotonic() - t0, sum(gunicorn_workers(port).values())))
        done = sum(statuses["recommend"].values())
        print(f"[soak] {time.monotonic() - t0:6.0f}s  recommend requests {done}  errors {len(errors)}  "
              f"workers RSS {rss_samples[-1][1] / 1024:.1f} MiB", flush=True)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    rss_end = gunicorn_workers(port)

    lines = ["# Soak report", "", f"Ran {elapsed / 60:.1f} minutes against {args.base}: {args.clients} recommend "
             f"clients, one writer (feature PUTs + interaction POSTs), a forced retrain every "
             f"{args.retrain_every:.0f} s.", "",
             "| operation | requests | req/s | statuses | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|"]
    for op in sorted(latencies):
        lat = np.asarray(latencies[op]) * 1000
        lines.append(f"| {op} | {len(lat)} | {len(lat) / elapsed:.1f} | {dict(statuses[op])} | "
                     f"{np.percentile(lat, 50):.2f} | {np.percentile(lat, 99):.2f} | {lat.max():.1f} |")
    growth = (sum(rss_end.values()) - sum(rss_start.values())) / 1024
    lines += ["", f"Errors (status 0 = connection failure, or 5xx): **{len(errors)}**", *[f"- {e}" for e in errors[:20]],
              "", f"Model versions served: {len(versions)} ({dict(versions.most_common(10))})", "",
              f"gunicorn RSS (master + workers): {sum(rss_start.values()) / 1024:.1f} MiB at start, "
              f"{sum(rss_end.values()) / 1024:.1f} MiB at the end (growth {growth:+.1f} MiB); per process at the end: "
              f"{ {pid: round(kib / 1024, 1) for pid, kib in rss_end.items()} }",
              "", "RSS samples (s, MiB): " + ", ".join(f"({s:.0f}, {kib / 1024:.0f})" for s, kib in rss_samples[::6])]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"minutes": elapsed / 60, "errors": errors, "statuses": {k: dict(v) for k, v in statuses.items()},
         "rss_samples": rss_samples}, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
