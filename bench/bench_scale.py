"""Top-N latency and memory against catalogue size: exact scoring vs the approximate (HNSW) index.

For each catalogue size a real LFMRecommender is fitted exactly as bench/bench_predict.py does (one
WARP epoch on synthetic interactions touching every item, 3 of 200 tags per item, 2 of 20 features
per user), an AnnIndex (recommender/ann.py, faiss HNSW, inner product) is built over its item matrix,
and for one known user these are timed call by call, interleaved:

    exact   model.recommend(user, 10)                                   the serving path today
    bare    item_matrix @ query, argpartition, sort of the 10           the numpy bound of exact scoring
    ann     index.query(query, 10), + user bias, sort of the 10         approximate top-10

plus the index's recall@10 against exact top-10 over ~200 known users (at several search breadths),
its build, save and load time and file size, and memory: process RSS (VmRSS) around building the
model's serving arrays and around building the index, and the sizes of the arrays.

    .venv/bin/python bench/bench_scale.py [--sizes 1700,100000,1000000] [--ef-construction 100] [--m 16]
                                  [--ef-search 64] [--threads 2] [--out docs/bench_scale.png]

Writes the PNG given by --out and a markdown report next to it (same name, .md). Needs faiss-cpu.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# BLAS threads as the service runs them (app/gunicorn_conf.py: one per worker); set OPENBLAS_NUM_THREADS
# in the environment to measure otherwise. Must happen before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


import argparse
import gc
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from recommender.model.ann import AnnIndex
from benchlib import machine_lines, print_table, report_paths, save_figure, wait_for_quiet
from recommender.model import LFMRecommender
from bench_predict import (
    LARGE, TOP_N, bare_topn, fmt_us, human_size, machine_info, measure, parse_sizes, synthetic_frames,
)

P99_TARGET_MS = 15.0  # the issue: "if p99 at 1M items is above 15 ms, add an approximate top-k index"
RECALL_USERS = 200
EF_SWEEP = (16, 32, 64, 128, 256, 512, 1024)
WIDE = 100  # a returned item 'in the exact top-100' is a near miss, not a bad recommendation
METHODS = {"exact": "exact recommend(u, 10)", "bare": "bare numpy bound", "ann": "ANN index top-10"}


# ---------------------------------------------------------------------------------------------- helpers

def rss_mib() -> float:
    """Resident set size of this process (VmRSS), MiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def settle() -> float:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim), then read VmRSS.

    Without the trim, memory freed earlier and reused by a new allocation would not show in an RSS delta.
    """
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    return rss_mib()


def mib(nbytes: float) -> float:
    return nbytes / 2**20


def ann_topn(index: AnnIndex, query: np.ndarray, user_bias: np.float32, n: int = TOP_N):
    rows, scores = index.query(query, n)
    scores = scores + user_bias
    order = np.argsort(-scores, kind="stable")
    return rows[order], scores[order]


def percentile_us(samples_ns: np.ndarray, q: float) -> float:
    return float(np.percentile(samples_ns, q)) / 1000


# ---------------------------------------------------------------------------------------------- run

@dataclass
class ScaleRun:
    size: int
    n_users: int
    n_interactions: int
    fit_seconds: float
    calls: dict[str, int] = field(default_factory=dict)
    p50_us: dict[str, float] = field(default_factory=dict)
    p99_us: dict[str, float] = field(default_factory=dict)
    recall: float = float("nan")  # at the default ef_search
    recall_min: float = float("nan")
    sweep: list[tuple[int, float, float, float, float]] = field(default_factory=list)  # ef, recall, in top-100, p50, p99 us
    score_diff: float = float("nan")
    build_seconds: float = float("nan")
    save_seconds: float = float("nan")
    load_seconds: float = float("nan")
    file_mib: float = float("nan")
    mem: dict[str, float] = field(default_factory=dict)  # MiB


def bench_size(n_items: int, args) -> ScaleRun:
    t0 = time.perf_counter()
    interactions, user_features, item_features = synthetic_frames(n_items, args.seed)
    model = LFMRecommender(indicators="both", no_components=args.components, loss="warp", random_state=args.seed)
    model.fit(interactions, user_features, item_features, epochs=1, num_threads=1)
    run = ScaleRun(n_items, model.n_users, len(interactions), time.perf_counter() - t0)
    del interactions, user_features, item_features
    gc.collect()

    # memory of the serving arrays: drop them and build them again, as a model load does
    model.index = None
    before = settle()
    model._prepare_serving()
    run.mem["rss_serving"] = settle() - before
    run.mem["item_matrix"] = mib(model.index.item_matrix.nbytes)
    run.mem["user_arrays"] = mib(model.index.user_query_rows.nbytes + model.index.user_bias.nbytes)
    run.mem["embeddings"] = mib(sum(getattr(model, f"{s}_{a}").nbytes for s in ("user", "item")
                                    for a in ("embeddings", "biases")))
    run.mem["optimiser"] = mib(sum(getattr(model, f"{s}_{a}").nbytes for s in ("user", "item")
                                   for a in ("embedding_gradients", "embedding_momentum", "bias_gradients",
                                             "bias_momentum")))
    print(f"\n[{human_size(n_items)} items] frames + fit(1 epoch) {run.fit_seconds:.1f} s, {model.n_users:,} users, "
          f"item matrix {model.index.item_matrix.shape} {run.mem['item_matrix']:.1f} MiB; serving arrays "
          f"RSS +{run.mem['rss_serving']:.1f} MiB", flush=True)

    item_matrix = model.index.item_matrix
    before = settle()
    t = time.perf_counter()
    index = AnnIndex.build(item_matrix, m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search,
                           threads=args.threads)
    run.build_seconds = time.perf_counter() - t
    run.mem["rss_index"] = settle() - before
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "items.faiss"
        t = time.perf_counter()
        index.save(path)
        run.save_seconds = time.perf_counter() - t
        run.file_mib = mib(path.stat().st_size)
        t = time.perf_counter()
        loaded = AnnIndex.load(path, dim=item_matrix.shape[1], ef_search=args.ef_search)
        run.load_seconds = time.perf_counter() - t
        del loaded
        gc.collect()
    print(f"  ANN index (m={args.m}, ef_construction={args.ef_construction}, {args.threads} threads): built in "
          f"{run.build_seconds:.1f} s, RSS +{run.mem['rss_index']:.0f} MiB, file {run.file_mib:.0f} MiB "
          f"(save {run.save_seconds:.2f} s, load {run.load_seconds:.2f} s)", flush=True)

    # ---- latency for one known user, interleaved
    user_id = model.user_space.ids[len(model.user_space.ids) // 2]
    user_idx = int(model.user_space.id_index[user_id])
    query = model.index.user_query_rows[user_idx]
    user_bias = model.index.user_bias[user_idx]
    calls = args.repeats if args.repeats else (2000 if n_items < LARGE else 200)
    fns = {
        "exact": lambda: model.recommend(user_id, TOP_N),
        "bare": lambda: bare_topn(item_matrix, query),
        "ann": lambda: ann_topn(index, query, user_bias),
    }
    counts = {"exact": calls, "bare": calls, "ann": max(calls, 2000)}
    rounds = max(1, min(calls // (10 if n_items < LARGE else 1), 200))
    print(f"  timing: {calls} calls of exact and bare, {counts['ann']} of ann, interleaved in {rounds} rounds ...",
          flush=True)
    samples = measure(fns, counts, rounds)
    for key, ns in samples.items():
        run.calls[key] = len(ns)
        run.p50_us[key] = percentile_us(ns, 50)
        run.p99_us[key] = percentile_us(ns, 99)

    rows, scores = ann_topn(index, query, user_bias)
    exact_scores = item_matrix[rows] @ query + user_bias
    run.score_diff = float(np.max(np.abs(scores - exact_scores)))
    top_exact = [item for item, _ in model.recommend(user_id, TOP_N)]
    print(f"  bench user: ANN top-10 shares {len(set(model.index.item_ids[rows]) & set(top_exact))}/10 with exact; "
          f"ANN score + bias vs exact score of the same rows: max |diff| {run.score_diff:.1e}", flush=True)

    # ---- recall@10 over many users, at several search breadths (each query a different user)
    rng = np.random.default_rng(args.seed + 1)
    users = rng.choice(model.n_users, size=min(RECALL_USERS, model.n_users), replace=False)
    queries = model.index.user_query_rows[users]
    exact_sets = [set(bare_topn(item_matrix, q).tolist()) for q in queries]
    wide_sets = [set(bare_topn(item_matrix, q, min(WIDE, n_items - 1)).tolist()) for q in queries]
    n_top = min(TOP_N, n_items)
    for ef in sorted(set(EF_SWEEP) | {args.ef_search}):
        index.ef_search = ef
        recalls, near, times = [], [], []
        for q, truth, wide in zip(queries, exact_sets, wide_sets):
            t = time.perf_counter_ns()
            rows, _ = index.query(q, TOP_N)
            times.append(time.perf_counter_ns() - t)
            got = set(rows.tolist())
            recalls.append(len(truth & got) / n_top)
            near.append(len(wide & got) / n_top)
        times = np.asarray(times)
        run.sweep.append((ef, float(np.mean(recalls)), float(np.mean(near)), percentile_us(times, 50),
                          percentile_us(times, 99)))
        if ef == args.ef_search:
            run.recall, run.recall_min = float(np.mean(recalls)), float(np.min(recalls))
    index.ef_search = args.ef_search
    print("  recall@10 over %d users: " % len(users)
          + ", ".join(f"ef {ef}: {r:.3f} ({fmt_us(p50)})" for ef, r, _, p50, _ in run.sweep), flush=True)
    del index, model, item_matrix
    gc.collect()
    return run


# ---------------------------------------------------------------------------------------------- report

HEADER = ["items", "method", "calls", "p50", "p99", "p99 < 15 ms", "recall@10"]


def table_rows(runs: list[ScaleRun], ef_search: int) -> list[list[str]]:
    rows = []
    for run in runs:
        for key in METHODS:
            recall = "1 (exact)" if key != "ann" else f"{run.recall:.3f} (ef {ef_search})"
            rows.append([human_size(run.size), METHODS[key], str(run.calls[key]), fmt_us(run.p50_us[key]),
                         fmt_us(run.p99_us[key]), "yes" if run.p99_us[key] < P99_TARGET_MS * 1000 else "NO", recall])
    return rows


MEM_HEADER = ["items", "item matrix", "user arrays", "embeddings", "optimiser state", "RSS + serving arrays",
              "RSS + ANN index", "index file", "ANN build", "save", "load"]


def mem_rows(runs: list[ScaleRun], threads: int) -> list[list[str]]:
    return [[human_size(r.size), f"{r.mem['item_matrix']:.1f} MiB", f"{r.mem['user_arrays']:.1f} MiB",
             f"{r.mem['embeddings']:.1f} MiB", f"{r.mem['optimiser']:.1f} MiB", f"{r.mem['rss_serving']:.1f} MiB",
             f"{r.mem['rss_index']:.1f} MiB", f"{r.file_mib:.1f} MiB", f"{r.build_seconds:.1f} s ({threads} thr)",
             f"{r.save_seconds:.2f} s", f"{r.load_seconds:.2f} s"] for r in runs]


SWEEP_HEADER = ["items", "ef_search", "recall@10 (mean)", f"ANN top-10 in exact top-{WIDE}", "query p50",
                "query p99"]


def sweep_rows(runs: list[ScaleRun]) -> list[list[str]]:
    return [[human_size(r.size), str(ef), f"{rec:.3f}", f"{near:.3f}", fmt_us(p50), fmt_us(p99)]
            for r in runs for ef, rec, near, p50, p99 in r.sweep]


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])


def crossover_text(runs: list[ScaleRun], key: str) -> str:
    """Where p99 of ``key`` crosses the 15 ms target (log-log interpolation between measured sizes)."""
    limit = P99_TARGET_MS * 1000
    last_ok = None
    for run in runs:
        if run.p99_us[key] >= limit:
            if last_ok is None:
                return f"misses p99 < {P99_TARGET_MS:g} ms already at {human_size(run.size)} items"
            x0, x1 = np.log(last_ok.size), np.log(run.size)
            y0, y1 = np.log(last_ok.p99_us[key]), np.log(run.p99_us[key])
            est = float(np.exp(x0 + (np.log(limit) - y0) * (x1 - x0) / (y1 - y0))) if y1 != y0 else run.size
            return (f"meets p99 < {P99_TARGET_MS:g} ms at {human_size(last_ok.size)} items "
                    f"({fmt_us(last_ok.p99_us[key])}) and misses it at {human_size(run.size)} "
                    f"({fmt_us(run.p99_us[key])}); log-log interpolation puts the crossing near "
                    f"{human_size(int(round(est, -3)))} items")
        last_ok = run
    return f"meets p99 < {P99_TARGET_MS:g} ms at every measured size (up to {human_size(runs[-1].size)})"


def conclusions(runs: list[ScaleRun], args) -> list[str]:
    out = [f"Exact `recommend`: {crossover_text(runs, 'exact')}.",
           f"Bare numpy bound: {crossover_text(runs, 'bare')}."]
    big = runs[-1]
    out.append(
        f"At {human_size(big.size)} items the ANN index answers in {fmt_us(big.p50_us['ann'])} p50 / "
        f"{fmt_us(big.p99_us['ann'])} p99 (exact: {fmt_us(big.p50_us['exact'])} / {fmt_us(big.p99_us['exact'])}, "
        f"{big.p50_us['exact'] / big.p50_us['ann']:.0f}x slower at p50) with recall@10 {big.recall:.3f} at "
        f"ef_search {args.ef_search} (worst user {big.recall_min:.1f}); building it takes "
        f"{big.build_seconds:.0f} s on {args.threads} threads and {big.mem['rss_index']:.0f} MiB of RSS.")
    for goal in (0.9, 0.95):
        best = [s for s in big.sweep if s[1] >= goal]
        if best:
            ef, rec, near, p50, p99 = best[0]
            out.append(f"Recall@10 >= {goal:g} at {human_size(big.size)} needs ef_search {ef} ({rec:.3f}, "
                       f"{fmt_us(p50)} p50 / {fmt_us(p99)} p99 per query).")
        else:
            ef, rec, near, p50, p99 = max(big.sweep, key=lambda s: s[1])
            out.append(f"Recall@10 >= {goal:g} is not reached at {human_size(big.size)} up to ef_search {ef} "
                       f"({rec:.3f}, {fmt_us(p50)} p50; {near:.3f} of the ANN top-10 are in the exact "
                       f"top-{WIDE}).")
    return out


def write_markdown(path: Path, runs: list[ScaleRun], info: dict, args, png: Path) -> None:
    out = [
        "# Top-N at catalogue scale: exact scoring vs approximate index (`bench/bench_scale.py`)",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `.venv/bin/python bench/bench_scale.py --sizes "
        f"{','.join(str(r.size) for r in runs)} --m {args.m} --ef-construction {args.ef_construction} "
        f"--ef-search {args.ef_search} --threads {args.threads}` in {args.elapsed:.0f} s.",
        "",
        *machine_lines(info, args),
        "",
        "Models as in `bench/bench_predict.py`: `LFMRecommender(indicators=\"both\", loss=\"warp\", "
        f"no_components={args.components})` (row_norm \"{LFMRecommender().row_norm}\", the model default), one "
        "epoch on synthetic interactions touching every item. "
        "Index: `recommender.ann.AnnIndex` (faiss `IndexHNSWFlat`, inner product over "
        f"[item representation, item bias], m={args.m}, ef_construction={args.ef_construction}). "
        "Latency: one known user, top-10, one call at a time, `time.perf_counter_ns`, the three methods "
        "interleaved in rounds; the ANN query is single-threaded on the calling thread, and BLAS runs "
        f"{os.environ.get('OPENBLAS_NUM_THREADS', '?')} thread(s) (OPENBLAS_NUM_THREADS; the service runs one "
        "per gunicorn worker).",
        "",
        "- exact: `model.recommend(user_id, 10)` (user lookup, scores of every item, exact top-N selection, ids)",
        "- bare: `item_matrix @ query`, `argpartition`, sort of the 10 (query precomputed)",
        "- ANN: `index.query(query, 10)`, + user bias, sort of the 10 (query precomputed)",
        f"- recall@10: |ANN top-10 ∩ exact top-10| / 10, mean over {RECALL_USERS} random known users; "
        f"'in exact top-{WIDE}': the share of the ANN top-10 that exact scoring ranks in its top {WIDE} "
        "(the top of this catalogue is crowded with near-equal scores, so a miss is usually a near miss)",
        "",
        "## Latency",
        "",
    ]
    out += md_table(HEADER, table_rows(runs, args.ef_search))
    out += ["", "## Findings", ""] + [f"- {c}" for c in conclusions(runs, args)]
    out += ["", "## Recall and query time against search breadth (ef_search; each query a different user)", ""]
    out += md_table(SWEEP_HEADER, sweep_rows(runs))
    out += ["", "## Memory and index cost", "",
            "Array sizes are `nbytes`; RSS deltas are VmRSS after minus before building the model's serving "
            "arrays (`_prepare_serving`, as a model load does) and the index, each after `gc.collect()` "
            "and glibc `malloc_trim(0)`; deltas of a few MiB are within allocator noise. The optimiser state "
            "(adagrad accumulators) exists only in the trainer; loaded serving models carry placeholders.",
            ""]
    out += md_table(MEM_HEADER, mem_rows(runs, args.threads))
    out += ["", "Fit cost (frames + one epoch): "
            + "; ".join(f"{human_size(r.size)}: {r.fit_seconds:.1f} s ({r.n_users:,} users, "
                        f"{r.n_interactions:,} interactions)" for r in runs) + ".",
            "", f"![bench]({os.path.relpath(png, path.parent)})", ""]
    path.write_text("\n".join(out), encoding="utf-8")


def plot(path: Path, runs: list[ScaleRun], info: dict, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.array([r.size for r in runs], dtype=float)
    colors = {"exact": "#1f77b4", "bare": "#2ca02c", "ann": "#d62728"}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.6))
    for key, label in METHODS.items():
        p50 = np.array([r.p50_us[key] for r in runs]) / 1000
        p99 = np.array([r.p99_us[key] for r in runs]) / 1000
        ax.plot(sizes, p50, "o-", color=colors[key], label=f"{label} p50")
        ax.plot(sizes, p99, "s--", color=colors[key], alpha=0.7, label=f"{label} p99")
    for r in runs:
        ax.annotate(f"recall {r.recall:.2f}", (r.size, r.p99_us["ann"] / 1000), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize=8, color=colors["ann"])
    ax.axhline(P99_TARGET_MS, color="black", ls=":", lw=1)
    ax.text(sizes[-1], P99_TARGET_MS * 1.12, f"p99 target {P99_TARGET_MS:g} ms", fontsize=8, ha="right")
    _size_axes(ax, sizes, "time per top-10 call, ms",
               f"Top-10 latency (ANN: faiss HNSW m={args.m}, ef_search={args.ef_search})")

    series = {
        "item matrix (nbytes)": ("item_matrix", "#1f77b4", "o-"),
        "RSS + serving arrays": ("rss_serving", "#6baed6", "o--"),
        "embeddings (nbytes)": ("embeddings", "#9467bd", "^-"),
        "RSS + ANN index": ("rss_index", "#d62728", "s-"),
    }
    for label, (key, color, style) in series.items():
        ax2.plot(sizes, [max(r.mem[key], 0.01) for r in runs], style, color=color, label=label)
    ax2.plot(sizes, [r.file_mib for r in runs], "s:", color="#ff7f0e", label="index file")
    for r in runs:
        ax2.annotate(f"build {r.build_seconds:.0f} s" if r.build_seconds >= 1 else f"build {r.build_seconds:.2f} s",
                     (r.size, r.mem["rss_index"]), textcoords="offset points", xytext=(0, 8), ha="center",
                     fontsize=8, color="#d62728")
    _size_axes(ax2, sizes, "MiB", f"Memory per process, and index build time ({args.threads} threads)")
    save_figure(fig, path, f"{info['cpu']}, nproc {info['nproc']}, numpy {info['numpy']}, BLAS {info['blas']}, "
                f"faiss {info.get('faiss', '?')}; load avg {args.load_start[0]:.2f} → {args.load_end[0]:.2f}")


def _size_axes(ax, sizes, ylabel: str, title: str) -> None:
    """Log-log axes over catalogue sizes, ticks at the measured sizes, legend top left."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("items in the catalogue")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.set_xticks(sizes, [human_size(int(s)) for s in sizes])
    ax.set_xticks([], minor=True)
    ax.set_xlim(sizes[0] / 1.6, sizes[-1] * 1.6)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1700,100000,1000000", help="catalogue sizes (default %(default)s)")
    parser.add_argument("--components", type=int, default=32, help="LightFM no_components (default 32)")
    parser.add_argument("--m", type=int, default=16, help="HNSW links per item (default 16)")
    parser.add_argument("--ef-construction", type=int, default=100, help="HNSW build breadth (default 100)")
    parser.add_argument("--ef-search", type=int, default=64, help="HNSW search breadth (default 64)")
    parser.add_argument("--threads", type=int, default=max(1, len(os.sched_getaffinity(0))),
                        help="threads for the index build (default: usable cores)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="calls of exact and bare; default 2000 below 100K items, 200 from there on")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the load average to settle")
    parser.add_argument("--out", default="var/reports/bench_scale.png",
                        help="PNG path, the .md goes next to it (pass docs/bench_scale.png to update the docs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = parse_sizes(parser, args.sizes)
    png, md = report_paths(args.out)

    started = time.perf_counter()
    import faiss

    info = machine_info()
    info["faiss"] = faiss.__version__
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    args.quiet = True if args.no_wait else wait_for_quiet()[1]
    args.load_start = os.getloadavg()
    print(f"load average at start: {args.load_start[0]:.2f} {args.load_start[1]:.2f} {args.load_start[2]:.2f}")
    runs = [bench_size(n, args) for n in sizes]
    args.load_end = os.getloadavg()
    args.elapsed = time.perf_counter() - started

    print()
    print_table(HEADER, table_rows(runs, args.ef_search))
    print()
    print_table(SWEEP_HEADER, sweep_rows(runs))
    print()
    print_table(MEM_HEADER, mem_rows(runs, args.threads))
    print()
    for text in conclusions(runs, args):
        print("- " + text)
    print(f"load average (1, 5, 15 min): start {args.load_start[0]:.2f}/{args.load_start[1]:.2f}/"
          f"{args.load_start[2]:.2f}, end {args.load_end[0]:.2f}/{args.load_end[1]:.2f}/{args.load_end[2]:.2f} "
          f"(nproc {info['nproc']})")
    plot(png, runs, info, args)
    write_markdown(md, runs, info, args, png)
    print(f"\nwrote {os.path.relpath(png)} and {os.path.relpath(md)} in {args.elapsed:.0f} s")
    bad = [r for r in runs if not r.score_diff <= 1e-4]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
