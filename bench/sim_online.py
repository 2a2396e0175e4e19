"""Simulated online evaluation on the weak demo world: does the exploration slice rank models like their true CTR?

Users of the weak world (recommender.synthetic, calibrated against MovieLens 100K) click according to their
true, generated taste (``World.truth``) and a position bias: the chance that the item at position p (1-based)
is clicked is ``examine(p) * relevance(u, i)``, ``examine(p) = 1 / log2(p + 1)`` (the DCG discount) and
``relevance = sigmoid(logit(u, i) + offset)``, the offset set so that a random item is clicked 2% of the time
at position 1 (``--random-ctr``).

The serving (logging) model is an old, under-trained LightFM (``--logger-epochs``, default 2) with
EXPLORATION_RATE ``--rate``; each simulated answer goes through the real code: ``LFMRecommender.rank`` with
the exploration draw seeded by the recommendation id, the impression log and attribution in a private Redis
(recommender.store.impressions), then recommender.online_eval reads the log back, as ``reco-online-eval``
does. Candidates: the logger itself, a LightFM trained to the selected defaults (30 epochs, features), the
same without features (collaborative only), and popularity. For each: its true CTR (exact expectation from
the truth, with its own order of positions), the replay estimate from the explored slots, and the naive
estimate (precision@k on the logged clicks).

    .venv/bin/python bench/sim_online.py [--users 2000] [--items 500] [--answers 200000] [--rate 0.2]
                                         [--out var/reports/sim_online.png]

Writes the PNG and a .md report beside it (docs/sim_online.png and docs/ONLINE_EVAL.md carry a run).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau
from tqdm import tqdm

from benchlib import bench_redis, report_paths, save_figure
from recommender.model import LFMRecommender
from recommender.online import exploration_seed, new_recommendation_id
from recommender.online_eval import compare, exclusions, read_slots, top_k_lists
from recommender.store import RedisFeatureStore
from recommender.store.impressions import Impression, ImpressionLog
from recommender.synthetic import make_world


def examine(positions: np.ndarray) -> np.ndarray:
    """Position bias: the chance that an item at 1-based ``positions`` is looked at."""
    return 1.0 / np.log2(positions + 1.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def calibrate_offset(logits: np.ndarray, target: float = 0.01) -> float:
    """The offset with mean sigmoid(logits + offset) == target (bisection)."""
    lo, hi = -40.0, 40.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if sigmoid(logits + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--answers", type=int, default=200_000, help="simulated GET /recommend answers")
    parser.add_argument("--rate", type=float, default=0.2, help="EXPLORATION_RATE of the logging model")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--random-ctr", type=float, default=0.02,
                        help="relevance of a random item (the click chance at position 1)")
    parser.add_argument("--logger-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-url", default=None, help="a Redis to use (keys under sim:<random>:); "
                                                          "default: a private redis-server")
    parser.add_argument("--out", default="var/reports/sim_online.png")
    args = parser.parse_args()
    png, md = report_paths(args.out)
    started = time.time()
    rng = np.random.default_rng(args.seed)

    world = make_world(args.users, args.items, seed=args.seed)
    truth = world.truth
    train = world.interactions
    users = sorted(set(train["user_id"]))
    logits = truth.logits(users)  # (users, items) in truth.item_ids order
    offset = calibrate_offset(logits, args.random_ctr)
    relevance = sigmoid(logits + offset)
    row_of = {u: k for k, u in enumerate(users)}
    col_of = {i: k for k, i in enumerate(truth.item_ids)}
    seen = {u: set(g) for u, g in train.groupby("user_id")["item_id"]}
    print(f"world: {len(users):,d} users, {args.items:,d} items, {len(train):,d} interactions; "
          f"offset {offset:.2f}; relevance of a random item {relevance.mean():.4f}", flush=True)

    def fit(name: str, epochs: int, features: bool) -> LFMRecommender:
        t = time.perf_counter()
        model = LFMRecommender(random_state=args.seed)
        model.fit(train, world.user_features if features else None, world.item_features if features else None,
                  epochs=epochs)
        print(f"trained {name} in {time.perf_counter() - t:.1f} s", flush=True)
        return model

    logger = fit("logger", args.logger_epochs, True)
    models = {f"logger (LightFM, {args.logger_epochs} epochs)": logger,
              "LightFM, 30 epochs, features": fit("lightfm-30", 30, True),
              "LightFM, 30 epochs, no features": fit("lightfm-cf", 30, False)}
    counts = train["item_id"].value_counts()
    popular = [i for i in counts.index]

    def rank_of(name):
        if name == "popularity":
            return lambda user, k, skip: [i for i in popular if i not in skip][:k]
        model = models[name]
        return lambda user, k, skip: [i for i, _ in model.rank(user, k, exclude=skip).items]

    names = list(models) + ["popularity"]

    # --- the logged traffic: the logger answers with exploration, users click by their truth
    with tempfile.TemporaryDirectory() as tmp:
        server, url = bench_redis(Path(tmp), args.redis_url)
        prefix = f"sim:{new_recommendation_id()[-8:]}:"
        store = RedisFeatureStore.from_url(url, prefix)
        log = ImpressionLog(store, max_entries=0, ttl=3600)
        try:
            pending, clicks = [], []
            n_clicks = 0
            with tqdm(total=args.answers, unit="answers", desc="simulate") as bar:
                for n in range(args.answers):
                    user = users[int(rng.integers(len(users)))]
                    rid = new_recommendation_id()
                    ranking = logger.rank(user, args.k, exclude=seen[user],
                                          explore=(args.rate, exploration_seed(rid)))
                    pending.append(Impression(rid, user, ranking.items, ranking.strategy, "logger", "default",
                                              ranking.explored, ranking.explore_pool))
                    cols = np.asarray([col_of[i] for i, _ in ranking.items])
                    p = examine(np.arange(1, len(cols) + 1)) * relevance[row_of[user], cols]
                    for position in np.flatnonzero(rng.random(len(cols)) < p):
                        clicks.append((rid, user, ranking.items[position][0]))
                    if len(pending) >= 2000 or n == args.answers - 1:
                        log.write(pending)
                        n_clicks += sum(a.status == "attributed" for a in log.attribute(clicks))
                        pending, clicks = [], []
                        bar.update(2000 if n != args.answers - 1 else args.answers % 2000 or 2000)
            print(f"{args.answers:,d} answers, {n_clicks:,d} attributed clicks", flush=True)

            # --- offline evaluation from the log, as reco-online-eval does
            slots = read_slots(log)
            plain = [s for s in slots if s.context == "user"]
            excluded = exclusions(plain, seen)
            logged_users = sorted({s.user_id for s in plain})
            lists = {name: top_k_lists(rank_of(name), logged_users, args.k, excluded) for name in names}
            report = compare(slots, lists, args.k)
        finally:
            store.client.delete(*store.client.keys(prefix + "*") or [prefix + "none"])
            store.close()
            if server is not None:
                server.stop()

    # --- the truth: expected CTR of each candidate's lists
    explored = [s for s in slots if s.explored]
    mean_examine = float(np.mean(examine(np.asarray([s.position for s in explored])))) if explored else 0.0
    for name in names:
        served, per_item = [], []
        for user, items in lists[name].items():
            rel = relevance[row_of[user], [col_of[i] for i in items]]
            served.append(float((examine(np.arange(1, len(rel) + 1)) * rel).mean()))
            per_item.append(float(rel.mean()))
        report["candidates"][name]["true_ctr_served"] = float(np.mean(served))
        report["candidates"][name]["true_ctr_at_explored_positions"] = float(np.mean(per_item)) * mean_examine
    order = {}
    for key, get in (("truth", lambda r: r["true_ctr_served"]), ("replay", lambda r: r["replay"]["ctr"] or 0.0),
                     ("naive", lambda r: r["naive"]["ctr"] or 0.0)):
        order[key] = sorted(names, key=lambda n: -get(report["candidates"][n]))
    truth_scores = [report["candidates"][n]["true_ctr_served"] for n in names]
    agreement = {key: float(kendalltau(truth_scores, [(-order[key].index(n)) for n in names]).statistic)
                 for key in ("replay", "naive")}
    report.update({"world": {"users": len(users), "items": args.items, "interactions": len(train),
                             "seed": args.seed, "kind": "weak (recommender.synthetic.make_world default)"},
                   "click_model": {"examine": "1/log2(p+1)", "relevance": "sigmoid(truth logit + offset)",
                                   "offset": offset, "random_item_relevance": float(relevance.mean())},
                   "rate": args.rate, "order": order, "kendall_tau_vs_truth": agreement,
                   "seconds": time.time() - started})
    write_report(report, names, png, md, args)
    print(md.read_text())


def write_report(report: dict, names: list[str], png: Path, md: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["candidates"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    y = np.arange(len(names))
    ax = axes[0]
    truth = [100 * rows[n]["true_ctr_at_explored_positions"] for n in names]
    est = [100 * (rows[n]["replay"]["ctr"] or 0) for n in names]
    err = np.array([[100 * ((rows[n]["replay"]["ctr"] or 0) - (rows[n]["replay"]["low"] or 0)) for n in names],
                    [100 * ((rows[n]["replay"]["high"] or 0) - (rows[n]["replay"]["ctr"] or 0)) for n in names]])
    ax.barh(y + 0.2, truth, 0.4, label="true CTR (at the explored positions)", color="#4c72b0")
    ax.barh(y - 0.2, est, 0.4, xerr=err, label="replay estimate, 95% interval", color="#dd8452", capsize=3)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("CTR per shown item (%)")
    ax.set_title("Exploration slice (replay) vs truth")
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[1]
    naive = [rows[n]["naive"]["ctr"] or 0 for n in names]
    ax.barh(y, naive, 0.5, color="#937860")
    ax.set_yticks(y, [""] * len(names))
    ax.invert_yaxis()
    ax.set_xlabel("precision@k on logged clicks")
    ax.set_title("Naive estimate from the logged clicks")
    fig.suptitle(f"Simulated online evaluation, weak demo world {report['world']['users']:,d} users x "
                 f"{report['world']['items']:,d} items; logger = {names[0]}, EXPLORATION_RATE {args.rate}",
                 fontsize=10)
    save_figure(fig, png, f"{report['answers']:,d} answers, {report['explored_slots']:,d} explored slots; "
                          f"Kendall tau vs truth: replay {report['kendall_tau_vs_truth']['replay']:.2f}, "
                          f"naive {report['kendall_tau_vs_truth']['naive']:.2f}; {report['seconds']:.0f} s")
    lines = ["# Simulated online evaluation (bench/sim_online.py)", "",
             f"World: the weak demo world (recommender.synthetic), {report['world']['users']:,d} users x "
             f"{report['world']['items']:,d} items, {report['world']['interactions']:,d} interactions, seed "
             f"{report['world']['seed']}. Clicks: examine(p) = 1/log2(p+1) times relevance = sigmoid(true logit "
             f"{report['click_model']['offset']:+.2f}) (a random item: {report['click_model']['random_item_relevance']:.3f}).",
             f"Logger: {names[0]} with EXPLORATION_RATE {args.rate}; {report['answers']:,d} answers, "
             f"{report['explored_slots']:,d} explored slots; logged CTR of the served slots "
             f"{100 * report['logged']['served']['ctr']:.2f}%, of the explored slots "
             f"{100 * report['logged']['explored']['ctr']:.2f}%.", "",
             "| candidate | true CTR as served | true CTR at explored positions | replay estimate [95%] | matched slots "
             "| naive p@k on logged clicks |", "|---|---:|---:|---:|---:|---:|"]
    for n in names:
        r = rows[n]
        rep = r["replay"]
        rep_text = "n/a" if rep["ctr"] is None else \
            f"{100 * rep['ctr']:.2f}% [{100 * rep['low']:.2f}, {100 * rep['high']:.2f}]"
        lines.append(f"| {n} | {100 * r['true_ctr_served']:.2f}% | {100 * r['true_ctr_at_explored_positions']:.2f}% "
                     f"| {rep_text} | {rep['shown']:,d} | {r['naive']['ctr']:.4f} |")
    lines += ["", f"Order by truth: {', '.join(report['order']['truth'])}.",
              f"Order by replay: {', '.join(report['order']['replay'])}.",
              f"Order by the naive estimate: {', '.join(report['order']['naive'])}.",
              f"Kendall tau against the truth: replay {report['kendall_tau_vs_truth']['replay']:.2f}, naive "
              f"{report['kendall_tau_vs_truth']['naive']:.2f}.", "",
              f"![simulation]({png.name})", ""]
    md.write_text("\n".join(lines))
    md.with_suffix(".json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
