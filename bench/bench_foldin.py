"""What fold-in and batch recommendations cost: the issue 16 targets, measured against references in the same run.

1. In-process ``GET /recommend`` (Flask test client, a real Redis with the user cache, 1.7K items): a known
   user with nothing new (the reference), a known user with 5 interactions since training, and an unknown
   user with 5 interactions, under a policy that uses every mechanism (least-squares fold-in, warm and fresh
   co-occurrence blends). Target: fold-in adds at most 50% to the reference.
2. Scoring at 100K items (the library, ``rank``): the same three users. Target: fold-in at most 2x the
   reference's scoring time.
3. Batch: users per second of ``recommender.batch.batch_recommend`` (exclusions from Redis, the one top-k
   rule per row) against the bare numpy bound on the same arrays (blocked matrix product + the same
   threshold-then-partition top-k per row, without exclusions, ids or Redis; a plain argpartition of each
   block is 3-10x slower than either at 100K items),
   at 1.7K and 100K items. Goal: within 1.5x of the bound at 100K items.

    .venv/bin/python bench/bench_foldin.py [--sizes 1700,100000] [--repeats 400] [--out var/reports/bench_foldin.png]

Models come from bench_predict.synthetic_frames (one epoch: the cost does not depend on training).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench_predict import human_size, machine_info, measure, parse_sizes, synthetic_frames
from benchlib import bench_redis, machine_lines, print_table, report_paths, save_figure, wait_for_quiet
from recommender.batch import batch_recommend
from recommender.model import LFMRecommender
from recommender.model.foldin import Blend, FoldIn, ServingPolicy
from recommender.model.topk import top_positions
from recommender.serving import build_snapshot
from recommender.settings import Settings
from recommender.store import RedisFeatureStore

# fold-in (least squares) for everyone with new interactions, and the co-occurrence + popularity blend for
# users the model does not know; known users with nothing new are LightFM's scores (the reference)
POLICY = ServingPolicy(fresh=Blend(cooc=1.0, popularity=1.0),
                       fold_in=FoldIn("ls", strength=1.0, prior=10.0, negatives=2.0))
FOLD_ONLY = ServingPolicy(fresh=Blend(), fold_in=POLICY.fold_in)  # no co-occurrence or popularity blend
WARM_BLEND = ServingPolicy(warm=Blend(cooc=1.0))  # what a warm co-occurrence blend costs on top
FRESH = 5


def build(n_items: int, seed: int) -> tuple[LFMRecommender, object]:
    interactions, user_features, item_features = synthetic_frames(n_items, seed)
    model = LFMRecommender(no_components=32, loss="warp", random_state=seed)
    model.fit(interactions, user_features, item_features, epochs=1)
    model.set_policy(POLICY)
    return model, (interactions, user_features, item_features)


def http_costs(model: LFMRecommender, frames, url: str, tmp: Path, repeats: int) -> dict[str, np.ndarray]:
    """In-process GET /recommend for the three users (the app's real path: user cache, snapshot, JSON)."""
    from app import create_app
    from recommender.model.artifacts import publish_model
    from recommender.store import jobs

    prefix = "bench:foldin:"
    store = RedisFeatureStore.from_url(url, prefix, socket_timeout=30)
    interactions, user_features, item_features = frames
    store.bulk_load_user_features(user_features)
    store.bulk_load_item_features(item_features)
    version = publish_model(model, tmp / "models", extra={"data_snapshot_at": time.time()})
    jobs.publish_version(store, version)
    items = list(model.iid_map.index[:FRESH])
    store.add_interactions([{"user_id": "u1", "item_id": i} for i in items])  # after the training snapshot
    store.add_interactions([{"user_id": "visitor", "item_id": i} for i in items])
    app = create_app(Settings(redis_url=url, redis_prefix=prefix, model_dir=str(tmp / "models"), admin_token="x" * 20,
                              watch_interval=60))
    try:
        client = app.test_client()
        svc = app.extensions["reco"]
        assert svc.users.wait_live(5)
        cases = {"known, nothing new": "/recommend/u2?n=10", f"known, {FRESH} new": "/recommend/u1?n=10",
                 f"unknown, {FRESH} new": "/recommend/visitor?n=10"}
        expected = {"known, nothing new": "personalized", f"known, {FRESH} new": "interactions",
                    f"unknown, {FRESH} new": "interactions"}
        for name, path in cases.items():
            body = client.get(path).get_json()
            assert body["strategy"] == expected[name], (name, body)
        fns = {name: (lambda p=path: client.get(p)) for name, path in cases.items()}
        return measure(fns, dict.fromkeys(fns, repeats), rounds=10)
    finally:
        app.extensions["reco"].stop()
        keys = list(store.client.scan_iter(match=prefix + "*", count=5000))
        for start in range(0, len(keys), 1000):
            store.client.delete(*keys[start:start + 1000])


def scoring_costs(model: LFMRecommender, repeats: int) -> dict[str, np.ndarray]:
    """The library's rank() for the three users (no Redis, no Flask)."""
    items = {i: 1.0 for i in model.iid_map.index[:FRESH]}
    known = model.uid_map.index[0]
    fns = {"known, nothing new": lambda: model.rank(known, 10),
           f"known, {FRESH} new": lambda: model.rank(known, 10, interactions=items),
           f"unknown, {FRESH} new": lambda: model.rank("visitor", 10, interactions=items),
           "known, warm blend": lambda: _warm(model, known)}
    out = measure(fns, dict.fromkeys(fns, repeats), rounds=10)
    model.set_policy(FOLD_ONLY)  # the same fold-in without the fresh users' blends
    only = {f"unknown, {FRESH} new, fold-in alone": lambda: model.rank("visitor", 10, interactions=items)}
    out.update(measure(only, dict.fromkeys(only, repeats), rounds=10))
    started = time.perf_counter()
    model.set_policy(replace(POLICY, item_item="ridge"))  # builds the ridge item-item ranker (~1-3 ms per item)
    print(f"ridge item-item ranker for {model.n_items:,} items built in {time.perf_counter() - started:.0f} s "
          f"({model.neighbors.matrix.nnz:,} weights)", flush=True)
    ridge = {"known, warm blend (ridge item-item)": lambda: _warm(model, known)}
    out.update(measure(ridge, dict.fromkeys(ridge, repeats), rounds=10))
    model.set_policy(POLICY)
    return out


def _warm(model: LFMRecommender, user: str):
    """rank() of a known user under a warm item-item blend (the model's item-item ranker: cosine
    co-occurrence unless its policy asks for the ridge one)."""
    index = model.index
    prepared = index.no_items
    return index.rank(index._user(user, None, True, prepared, None, WARM_BLEND), prepared, 10, set())


def batch_costs(model: LFMRecommender, url: str, users: int) -> dict[str, float]:
    """Users per second: batch_recommend (real exclusions from Redis) vs the bare numpy bound."""
    prefix = "bench:batch:"
    store = RedisFeatureStore.from_url(url, prefix, socket_timeout=30)
    store.set_item_features(model.iid_map.index[0], {})  # a catalogue: every known item
    store.client.sadd(store.keys.items, *model.iid_map.index)
    try:
        model.set_policy(ServingPolicy())  # LightFM's scores: the bound computes the same thing
        snap = build_snapshot(store, model, "bench")
        subset = list(model.uid_map.index[:users])
        t0 = time.perf_counter()
        done = sum(len(block.users) for block in batch_recommend(snap, 10, subset, store=store))
        batch = done / (time.perf_counter() - t0)
        matrix, queries = model.index.item_matrix, model.index.user_query_rows[:users]
        block = max(1, min(4096, (1 << 25) // len(matrix)))
        t0 = time.perf_counter()
        buffer = np.empty((min(block, users), len(matrix)), dtype=np.float32)  # one buffer, as batch_recommend
        for start in range(0, users, block):
            part = queries[start:start + block]
            scores = np.matmul(part, matrix.T, out=buffer[:len(part)])
            for row in scores:  # the same exact top-k selection, without exclusions, ids or Redis
                top = top_positions(row, 10)
                top[np.argsort(-row[top])[:10]]
        bare = users / (time.perf_counter() - t0)
        model.set_policy(POLICY)
        return {"batch users/s": batch, "bare numpy users/s": bare, "bare / batch": bare / batch}
    finally:
        keys = list(store.client.scan_iter(match=prefix + "*", count=5000))
        for start in range(0, len(keys), 1000):
            store.client.delete(*keys[start:start + 1000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1700,100000")
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--batch-users", type=int, default=5000)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="var/reports/bench_foldin.png",
                        help="PNG path, the .md goes next to it (pass docs/bench_foldin.png to update the docs)")
    args = parser.parse_args(argv)
    sizes = parse_sizes(parser, args.sizes)
    png, md = report_paths(args.out)
    args.load_start, args.quiet = wait_for_quiet()[0], True
    args.load_start = __import__("os").getloadavg()
    rows, lines, results = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        server, url = bench_redis(Path(tmp), args.redis_url)
        try:
            for size in sizes:
                print(f"[{human_size(size)} items] building the model ...", flush=True)
                model, frames = build(size, args.seed)
                timings = (http_costs(model, frames, url, Path(tmp) / f"m{size}", args.repeats) if size < 10_000
                           else scoring_costs(model, max(50, args.repeats // 4)))
                what = "in-process GET /recommend" if size < 10_000 else "rank() scoring"
                ref = np.median(timings["known, nothing new"])
                for name, ns in timings.items():
                    p50, p99 = np.median(ns) / 1e3, np.percentile(ns, 99) / 1e3
                    rows.append([human_size(size), what, name, f"{p50:.0f}", f"{p99:.0f}",
                                 f"{np.median(ns) / ref:.2f}x"])
                results[size] = {"timings": timings, "batch": batch_costs(model, url, min(args.batch_users,
                                                                                         model.n_users))}
        finally:
            if server:
                server.stop()
    args.load_end = __import__("os").getloadavg()
    print()
    print_table(["items", "path", "user", "p50 us", "p99 us", "vs nothing new"], rows)
    batch_rows = [[human_size(s), f"{r['batch']['batch users/s']:,.0f}", f"{r['batch']['bare numpy users/s']:,.0f}",
                   f"{r['batch']['bare / batch']:.2f}x"] for s, r in results.items()]
    print()
    print_table(["items", "batch users/s", "bare numpy users/s", "bare / batch"], batch_rows)
    lines += ["# Fold-in and batch costs (`bench/bench_foldin.py`)", "",
              f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `.venv/bin/python bench/bench_foldin.py --sizes "
              f"{args.sizes} --repeats {args.repeats}`.", "",
              f"Policy of every model: `{POLICY}` (every mechanism on: the most expensive case).", "",
              "| items | path | user | p50 µs | p99 µs | vs nothing new |", "|---|---|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "| items | batch users/s | bare numpy users/s | bare / batch |", "|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in batch_rows]
    args.quiet = True
    lines += ["", *machine_lines(machine_info(), args)]
    md.write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for size, result in results.items():
        names = list(result["timings"])
        axes[0].bar([f"{human_size(size)}\n{n}" for n in names],
                    [np.median(result["timings"][n]) / 1e3 for n in names])
    axes[0].set_ylabel("p50 µs")
    axes[0].set_title("fold-in cost (1.7K: in-process GET /recommend; 100K: scoring)")
    axes[0].tick_params(axis="x", labelsize=7)
    axes[1].bar([f"{human_size(s)} batch" for s in results] + [f"{human_size(s)} bare" for s in results],
                [r["batch"]["batch users/s"] for r in results.values()]
                + [r["batch"]["bare numpy users/s"] for r in results.values()])
    axes[1].set_yscale("log")
    axes[1].set_ylabel("users / s")
    axes[1].set_title("batch top-10 vs the bare numpy bound")
    save_figure(fig, png, f"{machine_info().get('cpu', '')}; {time.strftime('%Y-%m-%d')}")
    print(f"\nwrote {png} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
