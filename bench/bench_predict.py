"""Benchmark top-N serving for one known user against the bare numpy bound and plain LightFM.predict.

For each catalogue size a real LFMRecommender is fitted (one WARP epoch, k components, indicators
"both", 3 of 200 tags per item, 2 of 20 features per user) on a synthetic interaction frame that
touches every item, then five ways of scoring one known user are timed call by call:

    (a) recommend(user, 10)                          the serving fast path
    (b) recommend(user, 10, user_features={...})     a features dict per call (representation cached by content)
    (c) predict_online(user)                         a pandas Series of every score
    (d) item_matrix @ query + argpartition top-10    the bare numpy bound on the same arrays
    (e) LightFM.predict over all items + top-10      the naive way

Targets (docs/DESIGN.md, "Targets"): (a) within 1.5x of (d) at 1M items; within 5x of (d) at 1.7K
items and at least 2x faster than (e) there. Sizes >= 100K items are held to the large-catalogue
target, smaller ones to the small-catalogue targets.

    .venv/bin/python bench/bench_predict.py [--sizes 1700,1000000] [--components 32] [--repeats N]
                                    [--out docs/bench_predict.png]

Writes the PNG given by --out and a markdown report next to it (same name, .md).
"""

from __future__ import annotations

import sys
from pathlib import Path


import argparse
import gc
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from lightfm import LightFM

from recommender.model import LFMRecommender
from recommender.sysinfo import cpu_name, usable_cores
from benchlib import ROOT, print_table, report_paths, save_figure

TOP_N = 10
LARGE = 100_000  # sizes from here on are held to the 1M-item target
TARGET_LARGE_VS_BARE = 1.5
TARGET_SMALL_VS_BARE = 5.0
TARGET_SMALL_VS_PREDICT = 2.0
N_ITEM_TAGS, TAGS_PER_ITEM = 200, 3
N_USER_FEATURES, FEATURES_PER_USER = 20, 2
# interleaving: a method runs a short block of calls, then the next one; at large sizes every call is long
# (tens of ms) and its data far bigger than the caches, so blocks are single calls
CALLS_PER_BLOCK_SMALL, CALLS_PER_BLOCK_LARGE, MAX_ROUNDS = 10, 1, 200

METHODS = {
    "a": "recommend",
    "b": "recommend+user_features",
    "c": "predict_online",
    "d": "bare numpy bound",
    "e": "LightFM.predict+top10",
}


# ---------------------------------------------------------------------------------------------- setup

def parse_size(text: str) -> int:
    """1700, 1.7k, 1m, 1_000_000 -> int."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(round(float(text[:-1] if scale > 1 else text) * scale))


def parse_sizes(parser, text: str) -> list[int]:
    """Comma-separated catalogue sizes (see parse_size), each above TOP_N; a parser error otherwise."""
    sizes = [parse_size(s) for s in text.split(",") if s.strip()]
    if not sizes or min(sizes) <= TOP_N:
        parser.error(f"sizes must be > {TOP_N}")
    return sizes


def human_size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:g}M"
    if n >= 1_000:
        return f"{n / 1_000:g}K"
    return str(n)


def fmt_us(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.1f} µs"


def prefixed(prefix: str, values: np.ndarray) -> np.ndarray:
    return np.char.add(prefix, values.astype(str)).astype(object)


def synthetic_frames(n_items: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Interactions touching every item once (+50% random extra), and user and item feature frames."""
    rng = np.random.default_rng(seed)
    n_users = max(100, min(n_items // 50, 20_000))
    items = np.arange(n_items)
    item_col = np.concatenate([items, rng.integers(0, n_items, n_items // 2)])
    user_col = rng.integers(0, n_users, len(item_col))
    user_col[:n_users] = np.arange(n_users)  # every user is known
    interactions = pd.DataFrame({"user_id": prefixed("u", user_col), "item_id": prefixed("i", item_col)})
    tags = np.stack([rng.choice(N_ITEM_TAGS, TAGS_PER_ITEM, replace=False) for _ in range(min(n_items, 4096))])
    tags = tags[rng.integers(0, len(tags), n_items)]  # distinct tags per item, drawn cheaply at 1M
    item_features = pd.DataFrame({
        "item_id": np.repeat(prefixed("i", items), TAGS_PER_ITEM),
        "feature": prefixed("tag:", tags.ravel()),
        "weight": 1.0,
    })
    ufeat = np.stack([rng.choice(N_USER_FEATURES, FEATURES_PER_USER, replace=False) for _ in range(n_users)])
    user_features = pd.DataFrame({
        "user_id": np.repeat(prefixed("u", np.arange(n_users)), FEATURES_PER_USER),
        "feature": prefixed("uf:", ufeat.ravel()),
        "weight": 1.0,
    })
    return interactions, user_features, item_features


# ---------------------------------------------------------------------------------------------- timing

@dataclass
class Result:
    size: int
    key: str
    samples_ns: np.ndarray

    @property
    def method(self) -> str:
        return METHODS[self.key]

    @property
    def p50_us(self) -> float:
        return float(np.percentile(self.samples_ns, 50)) / 1000

    @property
    def p99_us(self) -> float:
        return float(np.percentile(self.samples_ns, 99)) / 1000


@dataclass
class SizeRun:
    size: int
    fit_seconds: float
    n_users: int
    rounds: int = 0
    row_norm: str = ""
    block: int = 0
    results: dict[str, Result] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (name, ok, detail)
    targets: list[tuple[str, bool, str]] = field(default_factory=list)

    def ratio_vs_bare(self, key: str) -> float:
        return self.results[key].p50_us / self.results["d"].p50_us

    def predict_over(self, key: str) -> float:
        return self.results["e"].p50_us / self.results[key].p50_us


def time_calls(fn, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def measure(fns: dict, repeats: dict, rounds: int, warmup: int = 5) -> dict[str, np.ndarray]:
    """Time every callable ``repeats[key]`` times, interleaved in ``rounds`` short blocks.

    Each round runs a few calls of every method in turn, so that background load on the machine (other
    processes, CPU frequency, a noisy neighbour) hits all methods alike and the ratios stay meaningful.
    """
    for key, fn in fns.items():
        time_calls(fn, min(warmup, repeats[key]))
    parts: dict[str, list[np.ndarray]] = {key: [] for key in fns}
    for r in range(rounds):
        gc.collect()
        for key, fn in fns.items():
            total = repeats[key]
            share = (r + 1) * total // rounds - r * total // rounds  # spread evenly over the rounds
            if share:
                parts[key].append(time_calls(fn, share))
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


def bare_topn(item_matrix: np.ndarray, query: np.ndarray, n: int = TOP_N) -> np.ndarray:
    scores = item_matrix @ query
    top = np.argpartition(-scores, n)[:n]
    return top[np.argsort(-scores[top])]


def lightfm_topn(model: LFMRecommender, user_idx: int, all_items: np.ndarray, n: int = TOP_N):
    scores = LightFM.predict(model, user_idx, all_items, user_features=model.user_features_,
                             item_features=model.item_features_, num_threads=1)
    top = np.argpartition(-scores, n)[:n]
    top = top[np.argsort(-scores[top])]
    return top, scores[top]


# ---------------------------------------------------------------------------------------------- run

def bench_size(n_items: int, k: int, repeats: int | None, seed: int) -> SizeRun:
    t0 = time.perf_counter()
    interactions, user_features, item_features = synthetic_frames(n_items, seed)
    model = LFMRecommender(indicators="both", no_components=k, loss="warp", random_state=seed)
    model.fit(interactions, user_features, item_features, epochs=1, num_threads=1)
    fit_seconds = time.perf_counter() - t0
    run = SizeRun(n_items, fit_seconds, model.n_users, row_norm=model.row_norm)
    print(f"\n[{human_size(n_items)} items] built frames + fitted 1 epoch in {fit_seconds:.1f} s "
          f"({len(interactions):,} interactions, {model.n_users:,} users, item matrix "
          f"{model.index.item_matrix.shape}, {model.index.item_matrix.nbytes / 2**20:.0f} MiB)", flush=True)

    user_id = model.user_space.ids[len(model.user_space.ids) // 2]
    user_idx = int(model.user_space.id_index[user_id])
    feats_frame = user_features[user_features["user_id"] == user_id]
    feats = dict(zip(feats_frame["feature"], feats_frame["weight"].astype(float)))
    item_matrix = model.index.item_matrix
    query = model.index.user_query_rows[user_idx]
    all_items = np.arange(model.n_items, dtype=np.int32)
    del interactions, user_features, item_features, feats_frame

    fast = repeats if repeats is not None else (2000 if n_items < LARGE else 200)
    slow = fast if n_items < LARGE else min(fast, 20)
    fns = {
        "a": lambda: model.recommend(user_id, TOP_N),
        "b": lambda: model.recommend(user_id, TOP_N, user_features=feats),
        "c": lambda: model.predict_online(user_id),
        "d": lambda: bare_topn(item_matrix, query),
        "e": lambda: lightfm_topn(model, user_idx, all_items),
    }
    counts = {"a": fast, "b": fast, "c": fast, "d": fast, "e": slow}
    block = CALLS_PER_BLOCK_SMALL if n_items < LARGE else CALLS_PER_BLOCK_LARGE
    rounds = max(1, min(fast // block, MAX_ROUNDS))
    print(f"  timing: {fast} calls each for (a)-(d), {slow} for (e), interleaved in {rounds} rounds ...", flush=True)
    samples = measure(fns, counts, rounds)
    run.rounds, run.block = rounds, block
    run.results = {key: Result(n_items, key, samples[key]) for key in fns}

    # correctness: the fast path must give LightFM.predict's top-10 (ids and scores)
    rec_a = model.recommend(user_id, TOP_N)
    rec_b = model.recommend(user_id, TOP_N, user_features=feats)
    series = model.predict_online(user_id)
    top_c = series.sort_values(ascending=False, kind="stable").index[:TOP_N].tolist()
    top_d = model.index.item_ids[bare_topn(item_matrix, query)].tolist()
    top_e_idx, top_e_scores = lightfm_topn(model, user_idx, all_items)
    top_e = model.index.item_ids[top_e_idx].tolist()
    ids_a = [i for i, _ in rec_a]
    scores_a = np.array([s for _, s in rec_a])
    max_diff = float(np.max(np.abs(scores_a - top_e_scores))) if len(scores_a) == len(top_e_scores) else np.inf
    run.checks = [
        ("(a) top-10 ids == (e) LightFM.predict top-10", ids_a == top_e, ""),
        ("(a) top-10 scores == (e) scores (atol 1e-5)", max_diff <= 1e-5, f"max |diff| = {max_diff:.2e}"),
        ("(b) top-10 ids == (a)", [i for i, _ in rec_b] == ids_a, ""),
        ("(c) top-10 of Series == (a)", top_c == ids_a, ""),
        ("(d) bare top-10 == (a)", top_d == ids_a, ""),
    ]

    ratio = run.ratio_vs_bare("a")
    if n_items >= LARGE:
        run.targets = [(f"recommend p50 <= {TARGET_LARGE_VS_BARE}x bare", ratio <= TARGET_LARGE_VS_BARE,
                        f"{ratio:.2f}x")]
    else:
        speedup = run.predict_over("a")
        run.targets = [
            (f"recommend p50 <= {TARGET_SMALL_VS_BARE:g}x bare", ratio <= TARGET_SMALL_VS_BARE, f"{ratio:.2f}x"),
            (f"LightFM.predict / recommend >= {TARGET_SMALL_VS_PREDICT:g}x", speedup >= TARGET_SMALL_VS_PREDICT,
             f"{speedup:.2f}x"),
        ]
    del model
    gc.collect()
    return run


# ---------------------------------------------------------------------------------------------- report

def machine_info() -> dict[str, str]:
    cpu, usable = cpu_name(), usable_cores()
    blas = "unknown"
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)"
                         for p in threadpool_info() if p.get("user_api") == "blas") or "none loaded"
    except Exception:  # threadpoolctl is optional
        pass
    import lightfm

    try:  # which code was measured: commit, and whether the scoring module had uncommitted edits
        import subprocess

        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "recommender/model",
                                "recommender/features.py"], capture_output=True, text=True, timeout=10).stdout
        revision = (head or "?") + (" + uncommitted recommender/ edits" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        revision = "unknown"
    return {
        "git": revision,
        "nproc": str(usable),
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "lightfm": getattr(lightfm, "__version__", "?"),
        "blas": blas,
    }


def table_rows(runs: list[SizeRun]) -> list[list[str]]:
    rows = []
    for run in runs:
        for key, res in run.results.items():
            rows.append([
                human_size(run.size), f"({key}) {res.method}", str(len(res.samples_ns)), fmt_us(res.p50_us),
                fmt_us(res.p99_us), f"{run.ratio_vs_bare(key):.2f}x", f"{run.predict_over(key):.2f}x",
            ])
    return rows


HEADER = ["items", "method", "calls", "p50", "p99", "p50 / bare (d)", "LightFM.predict (e) / this"]


def target_text(run: SizeRun) -> list[str]:
    return [f"{'MET' if ok else 'MISSED'}: {human_size(run.size)} items: {name} (measured {detail})"
            for name, ok, detail in run.targets]


def write_markdown(path: Path, runs: list[SizeRun], info: dict, args, png: Path) -> None:
    rows = table_rows(runs)
    out = [
        "# Top-N serving benchmark (`bench/bench_predict.py`)",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `.venv/bin/python bench/bench_predict.py --sizes "
        f"{','.join(str(r.size) for r in runs)} --components {args.components}"
        f"{f' --repeats {args.repeats}' if args.repeats else ''}`.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        "One known user, top-10, one call at a time, `time.perf_counter_ns` per call, calls of all methods "
        "interleaved in rounds (in each round every method runs a short block of calls: "
        + ", ".join(f"{human_size(r.size)}: {r.rounds} rounds of up to {r.block} call(s)" for r in runs)
        + "). Load average (1 min) "
        f"{args.load[0]:.2f} at the start, {args.load[1]:.2f} at the end. "
        "Models: `LFMRecommender(indicators=\"both\", loss=\"warp\", "
        f"no_components={args.components})` (default row_norm={runs[0].row_norm!r}) fitted for one epoch on "
        f"synthetic interactions touching every item, {TAGS_PER_ITEM} of {N_ITEM_TAGS} tags per item, "
        f"{FEATURES_PER_USER} of {N_USER_FEATURES} features per user. "
        "With few calls (LightFM.predict at large sizes) p99 is close to the maximum.",
        "",
        "- (a) `model.recommend(user_id, 10)`: the serving fast path",
        "- (b) `model.recommend(user_id, 10, user_features={...})`: a features dict per call; the representation is cached by user and feature content, so after the first call this is a key lookup",
        "- (c) `model.predict_online(user_id)`: a pandas Series of every score",
        "- (d) bare bound: `item_matrix @ query`, `argpartition`, sort of the 10 (query precomputed)",
        "- (e) `LightFM.predict(model, user_idx, arange(n_items), user_features=..., item_features=..., "
        "num_threads=1)` + the same top-10 selection",
        "",
        "(d) selects on `item_matrix @ query` without the user bias; (a) adds the bias first, as LightFM does. "
        "argpartition is data-dependent and the float32 shift by the bias turns near-equal scores into "
        "ties, so at large sizes (a) can measure slightly below (d).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(HEADER))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += ["", "## Targets (docs/DESIGN.md)", ""]
    out += [f"- {t}" for run in runs for t in target_text(run)]
    out += ["", "## Correctness", ""]
    for run in runs:
        for name, ok, detail in run.checks:
            out.append(f"- {human_size(run.size)} items: {'ok' if ok else 'FAILED'}: {name}"
                       + (f" ({detail})" if detail else ""))
    out += ["", "## Fit cost", ""]
    out += [f"- {human_size(r.size)} items, {r.n_users:,} users: synthetic frames + `fit(epochs=1)` "
            f"in {r.fit_seconds:.1f} s" for r in runs]
    out += ["", f"![bench]({os.path.relpath(png, path.parent)})", ""]
    path.write_text("\n".join(out), encoding="utf-8")


def short_target(name: str) -> str:
    for long, short in (("recommend", "(a)"), ("LightFM.predict", "(e)"), ("<=", "≤"), (">=", "≥")):
        name = name.replace(long, short)
    return name


def plot(path: Path, runs: list[SizeRun], info: dict, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(METHODS)
    colors = {"a": "#1f77b4", "b": "#6baed6", "c": "#9467bd", "d": "#2ca02c", "e": "#d62728"}
    width = 0.16
    fig, ax = plt.subplots(figsize=(11, 6.2))
    xs = np.arange(len(runs))
    for j, key in enumerate(keys):
        pos = xs + (j - (len(keys) - 1) / 2) * width
        p50 = np.array([run.results[key].p50_us for run in runs])
        p99 = np.array([run.results[key].p99_us for run in runs])
        ax.bar(pos, p50, width * 0.92, color=colors[key], label=f"({key}) {METHODS[key]}", zorder=2)
        ax.vlines(pos, p50, p99, color="black", lw=1, zorder=3)
        ax.scatter(pos, p99, marker="_", s=60, color="black", zorder=3)
        for x, v in zip(pos, p50):
            ax.text(x, v * 0.82, fmt_us(v).replace(" ", "\n"), ha="center", va="top", fontsize=7.5,
                    color="white", fontweight="bold", zorder=4)
    ticks = []
    for i, run in enumerate(runs):
        factor = TARGET_LARGE_VS_BARE if run.size >= LARGE else TARGET_SMALL_VS_BARE
        limit = factor * run.results["d"].p50_us
        x0, x1 = xs[i] - 2.55 * width, xs[i] + 2.55 * width
        ok = run.ratio_vs_bare("a") <= factor  # the line shows the vs-bare target only
        color = "#2ca02c" if ok else "#d62728"
        # behind the bars, so it never hides a value label
        ax.hlines(limit, x0, x1, colors=color, linestyles="--", lw=1.3, zorder=1.5)
        ax.text(x0 - 0.01, limit, f"{factor:g}× (d)", va="center", ha="right", fontsize=8, color=color)
        lines = [f"{human_size(run.size)} items"]
        lines += [f"{'met' if t_ok else 'MISSED'}: {short_target(name)} — {detail}"
                  for name, t_ok, detail in run.targets]
        ticks.append("\n".join(lines))
    ax.set_yscale("log")
    lowest = min(res.p50_us for run in runs for res in run.results.values())
    highest = max(res.p99_us for run in runs for res in run.results.values())
    ax.set_ylim(lowest / 4, highest * 1.6)  # room for the label inside the shortest bar
    ax.set_xticks(xs, ticks, fontsize=9)
    ax.set_xlim(-0.62, len(runs) - 0.45)
    ax.set_ylabel("time per call, µs (log): bar = p50, whisker = p99")
    ax.set_title(f"Top-10 for one known user (k={k}): LFMRecommender vs bare numpy vs LightFM.predict",
                 fontsize=12)
    ax.grid(axis="y", which="both", alpha=0.3, zorder=0)
    ax.legend(loc="upper left", fontsize=8.5, framealpha=0.95)
    save_figure(fig, path, f"{info['cpu']}, nproc {info['nproc']}, numpy {info['numpy']}, BLAS {info['blas']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1700,1000000",
                        help="comma-separated catalogue sizes (1700, 1.7k, 1m ...); default %(default)s")
    parser.add_argument("--components", type=int, default=32, help="LightFM no_components (default 32)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="calls per method; default 2000 below 100K items and 200 from there on "
                             "(LightFM.predict gets at most 20 calls from 100K items on)")
    parser.add_argument("--out", default="var/reports/bench_predict.png",
                        help="PNG path, the .md goes next to it (pass docs/bench_predict.png to update the docs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = parse_sizes(parser, args.sizes)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    png, md = report_paths(args.out)

    started = time.perf_counter()
    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    load_start = os.getloadavg()[0]
    runs = [bench_size(n, args.components, args.repeats, args.seed) for n in sizes]
    args.load = (load_start, os.getloadavg()[0])

    print()
    print_table(HEADER, table_rows(runs))
    print(f"\nload average (1 min): {args.load[0]:.2f} at the start, {args.load[1]:.2f} at the end "
          f"(nproc {info['nproc']}); other processes' load widens p99 and shifts the ratios")
    print("Targets (DESIGN.md): recommend within 1.5x of bare at 1M items; within 5x of bare at 1.7K "
          "and at least 2x faster than LightFM.predict there.")
    for run in runs:
        for t in target_text(run):
            print("  " + t)
    print("Correctness:")
    all_ok = True
    for run in runs:
        for name, ok, detail in run.checks:
            all_ok &= ok
            print(f"  {human_size(run.size)}: {'ok' if ok else 'FAILED'}: {name}" + (f" ({detail})" if detail else ""))
    plot(png, runs, info, args.components)
    write_markdown(md, runs, info, args, png)
    print(f"\nwrote {os.path.relpath(png)} and {os.path.relpath(md)} in {time.perf_counter() - started:.0f} s")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
