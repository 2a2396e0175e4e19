"""Benchmark the Redis feature store: bulk-load throughput and request-path read latency per parser.

    .venv/bin/python bench/bench_store.py [--rows 1000000] [--interactions 200000] [--redis-url URL]
                                  [--calls 5000] [--out docs/bench_store.png]

Without --redis-url a private redis-server is started (recommender.localredis) and stopped at the
end; with one, keys go under a fresh ``bench:<random>:`` prefix that is deleted afterwards.

1. Bulk-loads ``--rows`` item feature rows (rows / 5 items x 5 features) and ``--interactions``
   interactions, prints rows/s, and times a training snapshot of both.
2. Times ``get_user`` (10 features, 50 seen items) and ``get_item_features`` of 20 random items, call by
   call, with the hiredis parser and with redis-py's pure-Python parser, each over RESP3 (redis-py 8's
   default) and RESP2, and prints p50/p99 in microseconds.

Writes a bar chart to --out and the same table as markdown next to it (same name, .md).
"""

from __future__ import annotations

import sys
from pathlib import Path


import argparse
import os
import platform
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import redis
from redis._parsers import _HiredisParser, _RESP2Parser, _RESP3Parser

from recommender.localredis import LocalRedis
from recommender.store import RedisFeatureStore

FEATURES_PER_ITEM = 5
USER_ID = "bench-user"
# (label, parser class, RESP version): redis-py has no public name for the pure-Python parsers
CONFIGS = (("hiredis RESP3", _HiredisParser, 3), ("hiredis RESP2", _HiredisParser, 2),
           ("python RESP3", _RESP3Parser, 3), ("python RESP2", _RESP2Parser, 2))


@dataclass
class Latency:
    """Per-call latency summary of one operation under one client configuration."""

    config: str
    operation: str
    parser: str
    p50_us: float
    p99_us: float
    mean_us: float


def item_feature_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """rows / 5 items with 5 distinct tags each from a vocabulary of 1,000 (built without a Python loop)."""
    n_items = max(1, rows // FEATURES_PER_ITEM)
    rng = np.random.default_rng(seed)
    # 5 distinct tags per item: a random start and a random odd stride modulo 1000 never repeats in 5 steps
    start = rng.integers(0, 1000, n_items)[:, None]
    stride = (rng.integers(0, 100, n_items) * 2 + 1)[:, None]
    tags = (start + stride * np.arange(FEATURES_PER_ITEM)) % 1000
    ids = np.char.add("item", np.arange(n_items).astype(str))
    return pd.DataFrame({
        "item_id": np.repeat(ids, FEATURES_PER_ITEM).astype(object),
        "feature": np.char.add("tag:", tags.ravel().astype(str)).astype(object),
        "weight": rng.random(n_items * FEATURES_PER_ITEM).round(3) + 0.5,
    })


def interaction_frame(rows: int, n_items: int, n_users: int = 20_000, seed: int = 2) -> pd.DataFrame:
    """``rows`` interactions of random users with random items (integer timestamps)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": np.char.add("user", rng.integers(0, n_users, rows).astype(str)).astype(object),
        "item_id": np.char.add("item", rng.integers(0, n_items, rows).astype(str)).astype(object),
        "weight": rng.integers(1, 6, rows).astype(np.float64),
        "timestamp": 1_700_000_000 + np.arange(rows, dtype=np.int64),
    })


def time_calls(call: Callable[[], Any], calls: int, warmup: int = 200) -> np.ndarray:
    """Wall time of each of ``calls`` calls in microseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    out = np.empty(calls)
    clock = time.perf_counter_ns
    for k in range(calls):
        t0 = clock()
        call()
        out[k] = (clock() - t0) / 1000.0
    return out


def parser_in_use(store: RedisFeatureStore) -> str:
    """Class name of the reply parser on one of the store's pooled connections."""
    pool = store.client.connection_pool
    conn = pool.get_connection()
    try:
        return type(conn._parser).__name__
    finally:
        pool.release(conn)


def measure(url: str, prefix: str, n_items: int, calls: int, rounds: int = 10, seed: int = 1) -> list[Latency]:
    """Read latencies of get_user and get_item_features(20 items) for every parser/protocol config.

    The configurations take turns in ``rounds`` blocks of calls, so that load from other processes on
    the machine (or Redis warming up) falls on all of them alike instead of on whichever runs first.
    """
    rng = np.random.default_rng(seed)
    batches = [[f"item{k}" for k in rng.integers(0, n_items, 20)] for _ in range(64)]
    operations = ("get_user (10 features, 50 seen)", "get_item_features (20 items)")
    stores: dict[str, RedisFeatureStore] = {}
    parsers: dict[str, str] = {}
    samples: dict[tuple[str, str], list[np.ndarray]] = {}
    try:
        for label, parser_class, protocol in CONFIGS:
            store = RedisFeatureStore.from_url(url, prefix, parser_class=parser_class, protocol=protocol)
            stores[label] = store
            feats, seen = store.get_user(USER_ID)
            assert len(feats) == 10 and len(seen) == 50, (len(feats), len(seen))
            assert len(store.get_item_features(batches[0])) == len(set(batches[0]))
            parsers[label] = parser_in_use(store)
        per_round = max(1, calls // rounds)
        for r in range(rounds):
            for label in list(stores)[r % len(stores):] + list(stores)[:r % len(stores)]:  # rotate the order
                store = stores[label]
                counter = iter(range(10**12))
                ops = {
                    operations[0]: lambda: store.get_user(USER_ID),
                    operations[1]: lambda: store.get_item_features(batches[next(counter) % 64]),
                }
                for operation, call in ops.items():
                    samples.setdefault((label, operation), []).append(
                        time_calls(call, per_round, warmup=200 if r == 0 else 20))
    finally:
        for store in stores.values():
            store.close()
    results = []
    for label, _, _ in CONFIGS:
        for operation in operations:
            us = np.concatenate(samples[(label, operation)])
            results.append(Latency(label, operation, parsers[label], float(np.percentile(us, 50)),
                                   float(np.percentile(us, 99)), float(us.mean())))
    return results


def table(throughput: list[str], latencies: list[Latency], calls: int) -> str:
    """The results as markdown: throughput lines, then the latency table (printed and written next to the chart)."""
    lines = [
        *[f"- {line}" for line in throughput],
        "",
        f"read latency over {calls:,d} sequential calls (µs):",
        "",
        "| client | parser class | operation | p50 | p99 | mean |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in latencies:
        lines.append(f"| {r.config} | {r.parser} | {r.operation} | {r.p50_us:.0f} | {r.p99_us:.0f} | "
                     f"{r.mean_us:.0f} |")
    return "\n".join(lines)


def plot(latencies: list[Latency], out: Path, title: str) -> None:
    """Grouped bars: p50 and p99 per client configuration, one panel per operation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    operations = list(dict.fromkeys(r.operation for r in latencies))
    configs = list(dict.fromkeys(r.config for r in latencies))
    fig, axes = plt.subplots(1, len(operations), figsize=(6 * len(operations), 4.2), squeeze=False)
    x = np.arange(len(configs))
    for ax, operation in zip(axes[0], operations):
        rows = {r.config: r for r in latencies if r.operation == operation}
        p50 = [rows[c].p50_us for c in configs]
        p99 = [rows[c].p99_us for c in configs]
        ax.bar(x - 0.2, p50, 0.4, label="p50")
        ax.bar(x + 0.2, p99, 0.4, label="p99")
        for xs, values in ((x - 0.2, p50), (x + 0.2, p99)):
            for xi, v in zip(xs, values):
                ax.text(xi, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, configs, rotation=15)
        ax.set_ylabel("µs per call")
        ax.set_title(operation)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the chart and the markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="item feature rows to load (default 1M)")
    parser.add_argument("--redis-url", default=None, help="an existing Redis (default: start a private one)")
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per operation and client")
    parser.add_argument("--interactions", type=int, default=200_000,
                        help="interaction rows to bulk-load and snapshot (default 200K)")
    parser.add_argument("--batch", type=int, default=5000, help="entities (rows) per bulk-load batch")
    parser.add_argument("--out", type=Path, default=Path("var/reports/bench_store.png"),
                        help="PNG path, the .md goes next to it (pass docs/bench_store.png to update the docs)")
    args = parser.parse_args(argv)
    if args.rows < FEATURES_PER_ITEM or args.calls < 100:
        parser.error(f"--rows must be >= {FEATURES_PER_ITEM} and --calls >= 100")

    tmp = tempfile.TemporaryDirectory(prefix="bench-store-")
    server = None
    url = args.redis_url
    if url is None:
        server = LocalRedis(Path(tmp.name) / "redis").start()
        url = server.url
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    store = RedisFeatureStore.from_url(url, prefix, socket_timeout=60.0, connect_timeout=2.0)
    try:
        info = store.client.info("server")
        frame = item_feature_frame(args.rows)
        n_items = len(frame) // FEATURES_PER_ITEM
        print(f"loading {len(frame):,d} item feature rows into Redis {info['redis_version']} at {url}")
        start = time.perf_counter()
        loaded = store.bulk_load_item_features(frame, batch=args.batch, progress=True)
        load_seconds = time.perf_counter() - start
        assert store.catalogue_size() == n_items
        throughput = [f"bulk_load_item_features: {loaded:,d} rows ({n_items:,d} items x {FEATURES_PER_ITEM}) "
                      f"in {load_seconds:.2f} s = {loaded / load_seconds:,.0f} rows/s"]

        interactions = interaction_frame(args.interactions, n_items)
        start = time.perf_counter()
        appended = store.bulk_load_interactions(interactions, batch=args.batch, progress=True)
        seconds = time.perf_counter() - start
        throughput.append(f"bulk_load_interactions: {appended:,d} rows in {seconds:.2f} s = "
                          f"{appended / seconds:,.0f} rows/s")
        start = time.perf_counter()
        snap = store.snapshot()
        seconds = time.perf_counter() - start
        assert len(snap.interactions) == appended and len(snap.item_features) == loaded
        throughput.append(f"snapshot (training read): {len(snap.interactions):,d} interactions + "
                          f"{len(snap.item_features):,d} feature rows in {seconds:.2f} s")
        del snap

        store.set_user_features(USER_ID, {f"feature:{k}": 1.0 for k in range(10)})
        store.add_interactions([{"user_id": USER_ID, "item_id": f"item{k}"} for k in range(50)])
        latencies = measure(url, prefix, n_items, args.calls)
    finally:
        if server is not None:
            server.stop()
        else:
            keys = list(store.client.scan_iter(match=prefix + "*", count=10_000))
            for lo in range(0, len(keys), 10_000):
                store.client.delete(*keys[lo:lo + 10_000])
        store.close()
        tmp.cleanup()

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
               f"{platform.python_version()}, redis-py {redis.__version__}, Redis {info['redis_version']}")
    text = table(throughput, latencies, args.calls)
    print()
    print(text)
    print(f"\n{machine}")
    plot(latencies, args.out, f"RedisFeatureStore read latency ({args.calls:,d} calls, {machine})")
    args.out.with_suffix(".md").write_text(f"# Feature store benchmark\n\n{machine}\n\n{text}\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
