"""Compare LFMRecommender configurations against the popularity baseline; write a report and plots.

    reco-evaluate [--data DIR] [--out docs] [--epochs 20] [--quick]     (recommender/cli/evaluate.py)

Without --data: the synthetic demo world that `make run` loads (make_world(3000 users, 2000 items,
seed=42)), evaluated on its own held-back new users and items. With --data DIR: the standard format
(interactions.csv, user_features.csv, item_features.csv; see recommender/datasets.py), e.g. MovieLens
100K converted by reco-movielens; 10% of the users and 10% of the items are held out as
cold (recommender.evaluation.holdout_split), or, when DIR also holds holdout.csv and truth.json
(reco-demo-data), its new users and items are.

Three scenarios (warm users, cold users through their features, cold items through their features),
metrics at k=5 and 10 (precision, recall, NDCG, AUC, catalogue coverage), model and popularity side by
side, for: the losses with the default indicators and row_norm, then indicators x row_norm with warp,
and pure collaborative filtering (no features) as a reference. Then a learning curve (precision@10 vs
epochs) for row_norm "features" and "together" over several seeds, which decides row_norm and epochs.

Writes OUT/EVALUATION.md, OUT/evaluation.png and OUT/evaluation_epochs.png.
"""

from __future__ import annotations

import inspect
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..model import LFMRecommender
from ..model.foldin import RIDGE_K, RIDGE_K_ITEMS
from ..settings import Settings
from ..sysinfo import machine_info
from .metrics import evaluate_split, metric_names
from .splits import SCENARIOS, Split, holdout_split, world_split

K = (5, 10)
# the shipped defaults (recommender/settings.py), so a rerun always compares against what the service uses
# and the library's own defaults where the service chooses by validation (row_norm, epochs: "auto")
_LIBRARY = inspect.signature(LFMRecommender.__init__).parameters
LIBRARY_EPOCHS = inspect.signature(LFMRecommender.fit).parameters["epochs"].default
CURRENT = {k: v for k, v in Settings().model_params().items()
           if k in ("loss", "no_components", "learning_rate", "indicators")}
CURRENT["row_norm"] = _LIBRARY["row_norm"].default
SCENARIO_TITLES = {"warm": "warm users", "cold_users": "cold users", "cold_items": "cold items"}
HEADLINE = ("precision@10", "recall@10", "ndcg@10", "auc", "coverage@10")
SHORT = {"precision": "P", "recall": "R", "ndcg": "NDCG", "auc": "AUC", "coverage": "Cov"}
TIE = 0.01  # relative: checkpoints within 1% of the best checkpoint count as equally good


@dataclass
class Config:
    """One model configuration of the comparison table."""

    loss: str = CURRENT["loss"]
    indicators: str | bool = CURRENT["indicators"]
    row_norm: str = CURRENT["row_norm"]
    features: bool = True  # False: pure collaborative filtering (no user or item features at all)

    @property
    def name(self) -> str:
        if not self.features:
            return f"{self.loss} · pure CF (no features)"
        return f"{self.loss} · {self.indicators} · {self.row_norm}"

    @property
    def is_current(self) -> bool:
        return self.features and (self.loss, self.indicators, self.row_norm) == (
            CURRENT["loss"], CURRENT["indicators"], CURRENT["row_norm"])

    def model(self, seed: int) -> LFMRecommender:
        return LFMRecommender(indicators=self.indicators, row_norm=self.row_norm, loss=self.loss,
                              no_components=CURRENT["no_components"], learning_rate=CURRENT["learning_rate"],
                              random_state=seed)


@dataclass
class Run:
    config: Config
    results: dict  # scenario -> evaluate() result
    train_seconds: float
    eval_seconds: float


@dataclass
class Curve:
    """Learning curve of one row_norm: checkpoints x seeds x scenario -> evaluate() result."""

    row_norm: str
    epochs: list[int]
    by_seed: dict[int, list[dict]] = field(default_factory=dict)

    def metric(self, scenario: str, name: str = "precision@10", who: str = "model") -> np.ndarray:
        """(seeds, checkpoints) array of one metric."""
        return np.asarray([[point[scenario][who][name] for point in points] for points in self.by_seed.values()])


def configurations() -> list[Config]:
    """Losses with the default indicators/row_norm, then indicators x row_norm with warp, then pure CF."""
    out = [Config(loss=loss) for loss in ("warp", "bpr", "logistic")]
    for indicators in ("both", "users", "items", False):
        for row_norm in ("features", "together"):
            if indicators is False and row_norm == "together":
                continue  # no indicator on either side: both norms build the same rows
            cfg = Config("warp", indicators, row_norm)
            if not cfg.is_current:
                out.append(cfg)
    out.append(Config("warp", "both", "features", features=False))
    return out


# ---------------------------------------------------------------------------------------------- data


def load(args) -> tuple[Split, str]:
    """The split to evaluate on, and a one-line description of the data."""
    if args.data is None:
        from ..synthetic import make_world

        users, items = (1000, 800) if args.quick else (3000, 2000)
        world = make_world(users, items, seed=42)
        split = world_split(world.interactions, world.user_features, world.item_features, world.holdout,
                            world.new_users, world.new_items)
        return split, (f"synthetic demo world `make_world({users}, {items}, seed=42)` "
                       f"(recommender/synthetic.py; `make run` loads the 3000 x 2000 one): "
                       f"{len(world.new_users)} new users and {len(world.new_items)} new items held back by the world")
    from ..datasets import HOLDOUT, TRUTH, read_holdout, read_standard, read_truth

    interactions, user_features, item_features = read_standard(args.data)
    if (args.data / HOLDOUT).exists() and (args.data / TRUTH).exists():
        truth = read_truth(args.data)
        split = world_split(interactions, user_features, item_features, read_holdout(args.data),
                            truth["new_users"], truth["new_items"])
        return split, f"`{args.data}` with its holdout.csv / truth.json new users and items"
    split = holdout_split(interactions, user_features, item_features, cold_user_frac=0.1, cold_item_frac=0.1,
                          seed=0)
    return split, (f"`{args.data}` ({len(interactions)} interactions); `holdout_split`: 10% of users and 10% "
                   f"of items (those with features, seed 0) held out as cold")


# ---------------------------------------------------------------------------------------------- runs


def fit(config: Config, split: Split, epochs: int, seed: int, desc: str) -> LFMRecommender:
    return fit_with(config.model(seed), split, epochs, desc, features=config.features)


def fit_with(model: LFMRecommender, split: Split, epochs: int, desc: str, features: bool = True) -> LFMRecommender:
    """``model`` fitted on ``split.train`` (with its features unless ``features`` is False), with a progress bar."""
    with tqdm(total=epochs, desc=desc, unit="epoch", leave=False, dynamic_ncols=True) as bar:
        model.fit(split.train, split.user_features if features else None,
                  split.item_features if features else None, epochs=epochs,
                  callback=lambda done, total: bar.update(1))
    return model


def run_configs(split: Split, configs: list[Config], epochs: int, seed: int, max_users: int) -> list[Run]:
    runs = []
    for cfg in tqdm(configs, desc="configurations", unit="config", dynamic_ncols=True):
        started = time.perf_counter()
        model = fit(cfg, split, epochs, seed, cfg.name)
        trained = time.perf_counter()
        results = evaluate_split(model, split, K, max_users=max_users)
        runs.append(Run(cfg, results, trained - started, time.perf_counter() - trained))
        tqdm.write(f"{cfg.name:38s} " + "  ".join(
            f"{SCENARIO_TITLES[s]} P@10 {r['model']['precision@10']:.3f} (pop {r['popularity']['precision@10']:.3f})"
            for s, r in results.items()))
    return runs


def run_curves(split: Split, checkpoints: list[int], seeds: list[int], max_users: int) -> list[Curve]:
    curves = []
    total = len(seeds) * 2 * checkpoints[-1]
    with tqdm(total=total, desc="learning curves", unit="epoch", dynamic_ncols=True) as bar:
        for row_norm in ("features", "together"):
            curve = Curve(row_norm, list(checkpoints))
            cfg = Config("warp", "both", row_norm)
            for seed in seeds:
                model = cfg.model(seed)
                points, done = [], 0
                for target in checkpoints:
                    step = lambda e, t: bar.update(1)  # noqa: E731
                    if done == 0:
                        model.fit(split.train, split.user_features, split.item_features, epochs=target,
                                  callback=step)
                    else:
                        model.fit_partial(split.train, epochs=target - done, callback=step)
                    done = target
                    points.append(evaluate_split(model, split, K, max_users=max_users))
                curve.by_seed[seed] = points
            curves.append(curve)
    return curves


def run_shipped(split: Split, seed: int, max_users: int) -> dict:
    """The service as it ships: the trainer's selection on ``split.train``, then its final model, on the test.

    What ``Trainer._run`` does, with the settings of the environment (``Settings.from_env()``; by default
    ``ROW_NORM=auto``, ``EPOCHS=auto``, blends and fold-in on, ``TRAIN_BUDGET_SECONDS``):
    :func:`recommender.selection.validation_split` of the training part,
    :func:`recommender.selection.select_with_settings` on it (the trainer's own call), a final model with the chosen configuration and
    serving policy trained on the whole training part, measured per population on the report's held-out
    users and items (plus ``fresh``: the held-out users with their first 5 interactions folded in).
    """
    from ..selection import add_fresh, measure, select_with_settings, validation_split
    from .ease import ease_reference

    s = Settings.from_env()  # the settings a service started here would have (defaults unless set)
    params = {**s.model_params(), "random_state": seed}
    started = time.perf_counter()
    vsplit = validation_split(split.train, split.user_features, split.item_features, seed=s.random_state or 0)
    # this report's tables are at k=10 and its training single-threaded, whatever EVAL_K / TRAIN_THREADS say
    chosen = select_with_settings(vsplit, s, params, progress=tqdm.write, k=10, num_threads=1)
    selected = time.perf_counter()
    final = LFMRecommender(row_norm=chosen.row_norm, **params)
    final.set_policy(chosen.policy)  # before fit: the chosen item-item ranker is built once, by fit
    final = fit_with(final, split, chosen.epochs, "shipped model")
    test = add_fresh(Split(split.train, split.user_features, split.item_features, dict(split.scenarios)))
    populations = measure(final, test, k=10, max_users=max_users)
    tqdm.write("as shipped: " + ", ".join(f"{p} {v}" for p, v in populations.items()))
    ease = ease_reference(split, vsplit, k=10, max_users=max_users)  # lambda on the same validation slice
    if ease:
        tqdm.write(f"EASE (reference, lambda {ease['l2']:g}): warm precision@10 {ease['precision@10']:.4f}")
    return {"selection": chosen.metrics(), "test": populations, "select_seconds": selected - started, "ease": ease,
            "settings": {"ROW_NORM": s.row_norm, "EPOCHS": s.epochs, "BLENDS": s.blends, "FOLD_IN": s.fold_in,
                         "TRAIN_BUDGET_SECONDS": s.train_budget_seconds},
            "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------- analysis


def reference(runs: list[Run]) -> dict[str, float]:
    """Popularity precision@10 per scenario as the current default's run measured it (fixed denominators)."""
    current = next(r for r in runs if r.config.is_current)
    return {s: res["popularity"]["precision@10"] for s, res in current.results.items()}


def lift(results: dict, ref: dict[str, float]) -> float:
    """Mean over scenarios of model precision@10 / the reference popularity precision@10 (NaN skipped).

    The denominators are fixed (``reference``) so that configurations are compared on their own
    numbers: the cold-item baseline follows each model's bias rule and would otherwise move the ratio.
    """
    ratios = [r["model"]["precision@10"] / ref[s] for s, r in results.items()
              if ref.get(s, 0) > 0 and not math.isnan(r["model"]["precision@10"])]
    return float(np.mean(ratios)) if ratios else float("nan")


def curve_lift(curve: Curve, ref: dict[str, float]) -> np.ndarray:
    """(seeds, checkpoints) lift."""
    return np.asarray([[lift(point, ref) for point in points] for points in curve.by_seed.values()])


def flat_epoch(curve: Curve, scenarios=("warm", "cold_users")) -> int:
    """Largest checkpoint whose mean precision@10 is within TIE of the best checkpoint in every scenario.

    "Train as long as it costs nothing measurable": on data where quality still rises this is the best
    checkpoint; where it peaks early and then decays it stops before the decay.
    """
    means = {s: curve.metric(s).mean(axis=0) for s in scenarios}
    ok = [epoch for i, epoch in enumerate(curve.epochs)
          if all(means[s][i] >= (1 - TIE) * means[s].max() for s in scenarios)]
    return ok[-1] if ok else curve.epochs[int(np.argmax(means["warm"]))]


def find_run(runs: list[Run], loss: str, indicators, row_norm: str) -> Run | None:
    return next((r for r in runs if r.config.features and (r.config.loss, r.config.indicators, r.config.row_norm)
                 == (loss, indicators, row_norm)), None)


def decide(runs: list[Run], curves: list[Curve], epochs: int) -> dict:
    """Defaults the numbers support (the rules are spelt out in the report)."""
    by_norm = {c.row_norm: c for c in curves}
    at = {n: c.epochs.index(epochs) if epochs in c.epochs else len(c.epochs) - 1 for n, c in by_norm.items()}
    ref = reference(runs)
    lifts = {n: curve_lift(c, ref)[:, at[n]] for n, c in by_norm.items()}
    noise = max(float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in lifts.values())
    row_norm = max(lifts, key=lambda n: lifts[n].mean())
    if row_norm != CURRENT["row_norm"] and lifts[row_norm].mean() - lifts[CURRENT["row_norm"]].mean() <= noise:
        row_norm = CURRENT["row_norm"]  # not clearly better: keep the current default
    chosen = find_run(runs, CURRENT["loss"], CURRENT["indicators"], row_norm)
    chosen_lift = lift(chosen.results, ref)
    threshold = chosen_lift + 2 * noise
    better = [r for r in runs if r.config.features and r is not chosen and lift(r.results, ref) > threshold]
    return {"row_norm": row_norm, "epochs": flat_epoch(by_norm[row_norm]), "lifts": lifts, "noise": noise,
            "ref": ref, "chosen": chosen, "chosen_lift": chosen_lift, "better": better}


# ---------------------------------------------------------------------------------------------- report


def fmt(x: float, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def short(name: str) -> str:
    metric, _, k = name.partition("@")
    return SHORT[metric] + (f"@{k}" if k else "")


def md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"] + [
        "| " + " | ".join(r) + " |" for r in rows]


def main_table(runs: list[Run], ref: dict[str, float]) -> list[str]:
    header = ["configuration"] + [f"{SCENARIO_TITLES[s]} {short(m)}" for s in SCENARIOS for m in HEADLINE] + ["lift"]
    best = {(s, m): max((r.results[s]["model"][m] for r in runs if not math.isnan(r.results[s]["model"][m])),
                        default=float("nan")) for s in SCENARIOS for m in HEADLINE}
    rows = []
    for r in runs:
        cells = [r.config.name + (" **(current default)**" if r.config.is_current else "")]
        for s in SCENARIOS:
            for m in HEADLINE:
                v = r.results[s]["model"][m]
                cells.append(f"**{fmt(v)}**" if not math.isnan(v) and v == best[s, m] else fmt(v))
        rows.append(cells + [fmt(lift(r.results, ref), 2)])
    current = next(r for r in runs if r.config.is_current)
    pop = ["*popularity baseline*"] + [fmt(current.results[s]["popularity"][m]) for s in SCENARIOS for m in HEADLINE]
    pop.append("1.00")
    rows.append([f"*{c}*" if i else c for i, c in enumerate(pop)])
    return md_table(header, rows)


def scenario_table(runs: list[Run], scenario: str) -> list[str]:
    names = metric_names(K)
    header = ["configuration"] + [short(n) for n in names] + ["train s", "eval s"]
    if scenario == "cold_items":
        header[-2:-2] = ["pop P@10", "pop NDCG@10", "pop AUC"]
    rows = []
    for r in runs:
        res = r.results[scenario]
        row = [r.config.name] + [fmt(res["model"][n]) for n in names]
        if scenario == "cold_items":
            row += [fmt(res["popularity"][n]) for n in ("precision@10", "ndcg@10", "auc")]
        rows.append(row + [f"{r.train_seconds:.1f}", f"{r.eval_seconds:.1f}"])
    if scenario != "cold_items":
        res = runs[0].results[scenario]
        rows.append(["*popularity baseline*"] + [fmt(res["popularity"][n]) for n in names] + ["", ""])
    return md_table(header, rows)


def curve_table(curves: list[Curve]) -> list[str]:
    header = ["epochs"] + [f"{c.row_norm}: {SCENARIO_TITLES[s]}" for c in curves for s in SCENARIOS]
    rows = []
    for i, epoch in enumerate(curves[0].epochs):
        row = [str(epoch)]
        for c in curves:
            for s in SCENARIOS:
                v = c.metric(s)[:, i]
                row.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}")
        rows.append(row)
    return md_table(header, rows)


def seed_table(curves: list[Curve], epochs: int, ref: dict[str, float]) -> list[str]:
    """features vs together at one checkpoint: several metrics, mean ± sd over seeds."""
    metrics = ("precision@10", "ndcg@10", "auc", "coverage@10")
    header = ["row_norm"] + [f"{SCENARIO_TITLES[s]} {short(m)}" for s in SCENARIOS for m in metrics] + ["lift"]
    rows = []
    for c in curves:
        i = c.epochs.index(epochs) if epochs in c.epochs else len(c.epochs) - 1
        row = [c.row_norm]
        for s in SCENARIOS:
            for m in metrics:
                v = c.metric(s, m)[:, i]
                row.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}")
        lifts = curve_lift(c, ref)[:, i]
        row.append(f"{lifts.mean():.3f} ± {lifts.std(ddof=1):.3f}" if len(lifts) > 1 else f"{lifts.mean():.3f}")
        rows.append(row)
    return md_table(header, rows)


def write_report(path: Path, args, data_desc: str, split: Split, runs: list[Run], curves: list[Curve],
                 decision: dict, seeds: list[int], info: dict, load: tuple, wall: float,
                 shipped: dict | None = None) -> None:
    current = next(r for r in runs if r.config.is_current)
    cf = next((r for r in runs if not r.config.features), None)
    together = next((r for r in runs if (r.config.loss, r.config.indicators, r.config.row_norm, r.config.features)
                     == ("warp", "both", "together", True)), None)
    sizes = split.describe()
    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "# Evaluation: LFMRecommender against the popularity baseline",
        "",
        "Generated by `reco-evaluate`; do not edit by hand (rerun the command instead).",
        "",
        f"- Command: `reco-evaluate{' ' + argv if argv else ''}` (from the project root)",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['os']}; Python {info['python']}, numpy "
        f"{info['numpy']}, pandas {info['pandas']}, lightfm {info['lightfm']}; single-threaded training; "
        f"load average {load[0]:.2f} at start and {load[1]:.2f} at the end (the machine was shared); "
        f"wall time {wall / 60:.1f} min",
        f"- Data: {data_desc}",
        f"- Train: {sizes['train']['interactions']} interactions, {sizes['train']['users']} users, "
        f"{sizes['train']['items']} items. Test: "
        + "; ".join(f"{SCENARIO_TITLES[s]} {sizes[s]['interactions']} interactions of {sizes[s]['users']} users"
                    + (f" on {sizes[s]['candidates']} cold items" if s == "cold_items" else "")
                    for s in SCENARIOS),
        f"- Model: no_components={CURRENT['no_components']}, learning_rate={CURRENT['learning_rate']}, "
        f"epochs={args.epochs}, random_state={args.seed} (table); metrics over at most {args.max_users} users "
        f"per scenario (fixed seed).",
        "",
        "## How it is measured",
        "",
        "One model per configuration is trained on the train part and answers all three scenarios "
        "(`recommender/evaluation.py`):",
        "",
        "- **warm users**: the last 20% of each known user's interactions (by timestamp, users with at "
        "least 5) are held out (`temporal_split`); candidates are all items the model knows, minus the "
        "user's training items.",
        "- **cold users**: users the model never saw; their features are passed as `user_features` to "
        "`predict_online` (cases III/VII of DESIGN.md). Candidates: all known items. Their held-out "
        "interactions with items the model does not know are not counted.",
        "- **cold items**: items the model never saw, passed with their features (`item_features`, "
        "case IX) and ranked **among the cold items only** for every known user who interacted with one. "
        "This answers \"does the model order new items by the user's taste?\". Mixed into the whole "
        "catalogue, a new item competes with known items that carry an indicator embedding, and a "
        "user's held-out interactions with known items would count as misses: that measures how much "
        "exposure new items get, a different question.",
        "",
        "Metrics (per user, then averaged over users): precision@k = hits in the top k / k; recall@k = "
        "hits / held-out items; NDCG@k with binary gains 1/log2(rank+1) over the ideal ordering; AUC = "
        "probability that a held-out item outscores a random candidate the user did not interact with "
        "(ties count one half). Coverage@k = distinct candidates that appear in anyone's top k / "
        "number of candidates. Any held-out interaction is a positive, whatever its weight. Ties in "
        "score are broken by item id, as `recommend` does, and the scores are `predict_online`'s "
        "(checked against `recommend` on small worlds).",
        "",
        "**Popularity baseline**: what the model serves a user it knows nothing about. For known items "
        "that is item popularity at fit time (interaction count, ties by mean weight). Popularity "
        "cannot rank items nobody has interacted with, so for cold items the baseline is the model's "
        "own rule for new items (`LFMRecommender._baseline_from_bias`): the popularity quantile of the "
        "item's feature-derived bias. It therefore depends on the trained model and differs per "
        "configuration; the cold-item table shows it for each.",
        "",
        "## Results",
        "",
        "Model metrics at k=10 (bold: best model value in the column); the last row is the popularity "
        "baseline (its cold-item values are those of the current default's bias rule). `pure CF` has no "
        "features: cold users fall back to popularity and cold items cannot be scored (—). lift: see "
        "Defaults. Standard errors over users of precision@10 (current default, model): "
        + ", ".join(f"{SCENARIO_TITLES[s]} ±{current.results[s]['stderr']['model']['precision@10']:.3f} "
                    f"({current.results[s]['users']} users)" for s in SCENARIOS) + ".",
        "",
        *main_table(runs, decision["ref"]),
        "",
        "![precision@10 and AUC per configuration](evaluation.png)",
        "",
    ]
    for s in SCENARIOS:
        lines += [f"### {SCENARIO_TITLES[s]}, k=5 and 10", "", *scenario_table(runs, s), ""]

    by_norm = {c.row_norm: c for c in curves}
    e = args.epochs
    lines += [
        f"## Learning curve: precision@10 vs epochs (warp, indicators both; seeds {', '.join(map(str, seeds))})",
        "",
        "Mean ± standard deviation over the seeds (model initialisation and sampling; the data and split "
        "stay fixed).",
        "",
        *curve_table(curves),
        "",
        "![precision@10 vs epochs](evaluation_epochs.png)",
        "",
        f"### row_norm \"features\" vs \"together\" at {e} epochs, over the seeds",
        "",
        "lift = mean over the three scenarios of model precision@10 / popularity precision@10, with the "
        "popularity values of the current default's run as fixed denominators ("
        + ", ".join(f"{SCENARIO_TITLES[s]} {v:.3f}" for s, v in decision["ref"].items()) + ").",
        "",
        *seed_table(curves, e, decision["ref"]),
        "",
        "## Defaults",
        "",
        "Rules (applied by the script, so that they hold for whatever data it is run on):",
        "",
        f"- row_norm: the one with the higher mean lift over the seeds at {e} epochs, unless it beats the "
        "current default by no more than one seed standard deviation (then the current default stays).",
        f"- epochs: the largest checkpoint where mean warm and cold-user precision@10 are both within {TIE:.0%} "
        "of their best checkpoint (train as long as it costs nothing measurable).",
        "- loss and indicators: another setting would replace the current one only if its lift exceeded "
        "that of the current loss and indicators with the chosen row_norm by more than two seed standard "
        "deviations of the lift (the table has one seed per configuration).",
        "",
    ]
    lf = decision["lifts"]
    norm_line = (f"- **row_norm = \"{decision['row_norm']}\"** (library default: \"{CURRENT['row_norm']}\"): lift over "
                 f"{len(seeds)} seed(s) " + ", ".join(
                     f"\"{n}\" {v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}" for n, v in lf.items())
                 + f"; precision@10 at {e} epochs, mean over the seeds:")
    lines.append(norm_line)
    for s in SCENARIOS:
        f_, t_ = (by_norm[n].metric(s)[:, by_norm[n].epochs.index(e) if e in by_norm[n].epochs else -1]
                  for n in ("features", "together"))
        se = current.results[s]["stderr"]["model"]["precision@10"]
        lines.append(f"  - {SCENARIO_TITLES[s]}: features {f_.mean():.3f}, together {t_.mean():.3f} "
                     f"({(t_.mean() / f_.mean() - 1) * 100:+.1f}% for together; "
                     + (f"seed sd {max(f_.std(ddof=1), t_.std(ddof=1)):.3f}, " if len(f_) > 1 else "")
                     + f"standard error over the {current.results[s]['users']} users {se:.3f})")
    if cf is not None and together is not None:
        cf_warm = cf.results["warm"]["model"]["precision@10"]
        tw = together.results["warm"]["model"]["precision@10"]
        fw = current.results["warm"]["model"]["precision@10"]
        lines.append(
            "  - DESIGN.md says normalising indicator and features together cost about a quarter of warm "
            "precision@10 against pure collaborative filtering. "
            + ("That does not hold here" if tw >= 0.8 * cf_warm else "That holds here")
            + f": warm precision@10 (seed {args.seed}, {e} epochs) is {tw:.3f} for \"together\", {fw:.3f} for "
            f"\"features\" and {cf_warm:.3f} for pure CF, i.e. \"together\" {(tw / cf_warm - 1) * 100:+.0f}% and "
            f"\"features\" {(fw / cf_warm - 1) * 100:+.0f}% against pure CF.")
    cfe = by_norm[decision["row_norm"]]
    means = {s: cfe.metric(s).mean(axis=0) for s in SCENARIOS}
    best = {s: cfe.epochs[int(np.argmax(means[s]))] for s in SCENARIOS}
    lines.append(f"- **epochs = {decision['epochs']}** (library default: {LIBRARY_EPOCHS}): with \"{decision['row_norm']}\", mean "
                 f"precision@10 peaks at {best['warm']} epochs for warm users and {best['cold_users']} for cold "
                 "users; by checkpoint: " + "; ".join(
                     f"{SCENARIO_TITLES[s]} " + ", ".join(f"{ep}: {v:.3f}" for ep, v in zip(cfe.epochs, means[s]))
                     for s in ("warm", "cold_users")) + ".")
    chosen_name = decision["chosen"].config.name
    if decision["better"]:
        lines.append("- loss / indicators: " + ", ".join(
            f"{r.config.name} (lift {lift(r.results, decision['ref']):.3f})" for r in decision["better"])
            + f" beat {chosen_name} (lift {decision['chosen_lift']:.3f}) by more than two seed standard "
              f"deviations ({2 * decision['noise']:.3f})"
            + ("" if len(seeds) > 1 else " (one seed only, so no noise estimate: run without --quick)")
            + "; confirm over several seeds (and on real data) before switching.")
    else:
        lines.append(f"- **loss = \"{CURRENT['loss']}\", indicators = \"{CURRENT['indicators']}\"** stay: no other "
                     f"loss or indicators setting beats {chosen_name} (lift {decision['chosen_lift']:.3f}) by more "
                     f"than two seed standard deviations ({2 * decision['noise']:.3f}).")
    below = [r.config.name for r in runs if any(
        r.results[s]["model"]["precision@10"] < r.results[s]["popularity"]["precision@10"]
        for s in ("warm", "cold_users"))]
    if below:
        lines.append("- Below the popularity baseline on warm or cold users: " + ", ".join(below) + ".")
    if args.data is None:
        lines += [
            "",
            "What the synthetic world can and cannot tell: it is calibrated against MovieLens 100K "
            "(docs/WORLD.md). A user's taste is mostly latent (age, gender and occupation barely tilt it; 40% "
            "of users state an interest that lifts its genre about 1.5x), item features say somewhat more, and "
            "item popularity is a long-tailed draw that is not in the item's features, so without item "
            "indicators (`\"users\"`, `False`) the model cannot learn which items are popular and falls below "
            "the popularity baseline. It reproduces MovieLens' orderings (warm users: `\"features\"` about equal "
            "to pure CF, `\"together\"` far below; feature-only users near popularity); its absolute numbers "
            "are not MovieLens' (its warm test is the world's own held-back interactions, more per user). "
            "Confirm on real data (MovieLens below, or your own files) before relying on a number.",
        ]
    if shipped is not None:
        lines += ["", *shipped_lines(shipped)]
    lines += [
        "",
        "## MovieLens 100K",
        "",
        "MovieLens is not shipped (and cannot be downloaded on the machine that produced this page). With "
        "the unpacked `ml-100k/` directory (u.data, u.user, u.item):",
        "",
        "```",
        "reco-movielens ml-100k/ data/ml100k",
        "reco-evaluate --data data/ml100k --out docs/ml100k",
        "```",
        "",
        "The first command writes the standard format (ratings as weights; age band, gender and "
        "occupation as user features; genres and release decade as item features). The second holds out "
        "10% of the users and 10% of the items as cold and the last 20% of the remaining users' ratings "
        "as the warm test, and writes this report for MovieLens to `docs/ml100k/` (leaving this one in "
        "place). `--quick` gives a smaller, faster run of either. Your own data: write the same three files "
        "(`interactions.csv` with user_id, item_id[, weight, timestamp]; `user_features.csv` and "
        "`item_features.csv` with id, feature[, weight]; recommender/datasets.py) and pass the directory as "
        "`--data`.",
        "",
        "Measured on MovieLens 100K elsewhere (its `ua` split; hand-built features: age band, gender, occupation; "
        "genres, release decade; WARP, 32 components, 20 epochs; figures quoted from issue 15, not measured on "
        "this machine, which has no copy): warm precision@10 `row_norm=\"together\"` 0.137-0.159, "
        "`\"features\"` 0.254, pure CF 0.252, EASE (lambda 300) 0.271, popularity 0.121; feature-only users "
        "0.489 vs popularity 0.501; new items AUC 0.704 (`features`) to 0.711 (`none`). docs/WORLD.md puts "
        "the demo world's figures for the same measurements next to these.",
        "",
    ]
    path.write_text("\n".join(lines))


def shipped_lines(shipped: dict) -> list[str]:
    """The report section on the service as it ships (run_shipped)."""
    sel, test = shipped["selection"], shipped["test"]
    chosen = sel["chosen"]
    policy = chosen["policy"]
    rows = []
    names = {"warm_users": "warm users", "feature_users": "feature-only users (new, features only)",
             "fresh_users": "fresh users (new, 5 interactions folded in)", "new_items": "new items (among themselves)"}
    for population, label in names.items():
        m = test.get(population)
        if not m:
            continue
        metric, base = ("auc", "popularity_auc") if population == "new_items" else ("precision@10",
                                                                                    "popularity_precision@10")
        value, ref = m.get(metric), m.get(base)
        ratio = f"{value / ref:.2f}x" if value is not None and ref else "—"
        served = ", ".join(f"{k} {v}" for k, v in sorted(m.get("strategies", {}).items())) or "—"
        rows.append([label, metric, fmt(value), fmt(ref), ratio, str(m.get("users", "")), served])
    tried = [c for c in sel["candidates"] if "population" not in c and "skipped" not in c]
    by_norm: dict = {}
    for c in tried:
        by_norm.setdefault(c["row_norm"], []).append(f"{c['epochs']}: {c['warm_precision@10']:.3f}")
    policy_rows = {}
    for c in sel["candidates"]:
        if "population" in c:
            policy_rows.setdefault(c["population"], []).append(c)
    lines = [
        "## The service as it ships: selection by validation",
        "",
        "The table above compares fixed configurations of the library. The service does not ship one: at every "
        "retrain its trainer (`recommender/training.py`) holds out a validation slice of its own data "
        "(`recommender.selection.validation_split`), picks `row_norm` and the number of epochs (early stopping "
        "on validation precision@10) and each population's serving policy (`recommender.selection.select`), "
        "then trains the final model on everything. This section runs exactly that with the service's settings "
        "(" + ", ".join(f"`{k}={str(v).lower()}`" for k, v in shipped["settings"].items()) + ") on the training "
        "part above and "
        f"measures the result on the same held-out users and items ({shipped['seconds'] / 60:.1f} min, of which "
        f"selection {shipped['select_seconds'] / 60:.1f} min).",
        "",
        f"- Chosen: row_norm **{chosen['row_norm']}**, **{chosen['epochs']} epochs**; serving policy (as in "
        f"`GET /model`): feature-only users served by `{policy.get('feature_users')}` with blend "
        f"`{policy.get('features')}`, fresh users by `{policy.get('fresh_users')}` with fold-in "
        f"`{policy.get('fold_in')}` and blend `{policy.get('fresh')}`, warm users' blend `{policy.get('warm')}` "
        f"with the item-item ranker `{policy.get('item_item')}`"
        + (f" (ridge_l2 {policy.get('ridge_l2')})" if policy.get("item_item") == "ridge" else "") + ".",
        "- Warm precision@10 on the validation slice by row_norm and epochs: "
        + "; ".join(f"{n}: {', '.join(v)}" for n, v in by_norm.items()) + ".",
    ]
    for population, cands in policy_rows.items():
        best = max(cands, key=lambda c: c.get("precision@10", -1))
        lines.append(f"- {population}: {len(cands)} policies tried on validation, best "
                     + ", ".join(f"{k}={v}" for k, v in best.items() if k not in ("population",))
                     + ". A population whose best policy loses to popularity on validation is served popularity.")
    lines += ["", "Test, per population (`strategies`: how many users each serving strategy answered):", "",
              *md_table(["population", "metric", "as shipped", "popularity", "ratio", "users", "strategies"], rows,
                       "llrrrrl"),
              ""]
    ease, warm = shipped.get("ease"), test.get("warm_users")
    if ease and warm:
        lines += [
            f"**Against a linear item-item model.** EASE (Steck 2019; `recommender/evaluation/ease.py`, a reference "
            f"that is not served: its dense items x items inverse does not scale), lambda "
            f"{ease['l2']:g} chosen on the same validation slice (" + ", ".join(
                f"{k}: {v:.3f}" for k, v in ease["validation"].items()) + f"), reaches warm precision@10 "
            f"**{ease['precision@10']:.4f}** on the same {ease['users']} test users; the service as shipped "
            f"**{warm['precision@10']:.4f}** (LightFM blended with the item-item ranker `{policy.get('item_item')}` at "
            f"weight {policy.get('warm', {}).get('cooc')}, both chosen on validation). The ridge item-item ranker is "
            f"EASE restricted to each item's {RIDGE_K} most co-occurring items ({RIDGE_K // 2} above "
            f"{RIDGE_K_ITEMS:,} items): its build is items x {RIDGE_K}^3 operations and its memory items x {RIDGE_K} "
            "weights, linear in the catalogue, where EASE's inverse is cubic in time and quadratic in memory "
            "(100,000 items: 80 GB).",
            ""]
    return lines


# ---------------------------------------------------------------------------------------------- plots


def plot_configs(path: Path, runs: list[Run]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"warm": "#4C72B0", "cold_users": "#DD8452", "cold_items": "#55A868"}
    names = [r.config.name.replace(" · ", "\n", 1) + (" *" if r.config.is_current else "") for r in runs]
    x = np.arange(len(runs))
    fig, axes = plt.subplots(2, 3, figsize=(17, 9), sharex=True)
    for row, metric in enumerate(("precision@10", "auc")):
        for col, s in enumerate(SCENARIOS):
            ax = axes[row, col]
            model = np.asarray([r.results[s]["model"][metric] for r in runs])
            pop = np.asarray([r.results[s]["popularity"][metric] for r in runs])
            ax.bar(x, np.nan_to_num(model), color=colors[s], label="model")
            if s == "cold_items":  # the baseline follows each model's own bias rule
                ax.scatter(x, pop, marker="_", s=500, color="black", linewidths=2, zorder=3,
                           label="popularity (bias rule)")
            else:
                ax.axhline(pop[0], color="black", linestyle="--", label="popularity")
            ax.set_title(f"{SCENARIO_TITLES[s]}: {metric}")
            values = np.concatenate([model, pop])
            top = np.nanmax(values) if np.isfinite(values).any() else 1.0
            if metric == "auc":
                ax.set_ylim(max(0.0, np.nanmin(values) - 0.1), min(1.0, top + 0.08))
            else:
                ax.set_ylim(0, top * 1.25)
            bottom = ax.get_ylim()[0]
            for xi, v in zip(x, model):
                if math.isnan(v):
                    ax.text(xi, bottom, "n/a", ha="center", va="bottom", fontsize=8)
                else:
                    ax.text(xi, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7, rotation=90)
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=90, fontsize=7)
            ax.legend(fontsize=8, loc="upper right", ncol=2)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle("LFMRecommender configurations vs popularity (* = current default)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(path: Path, curves: list[Curve], chosen_epochs: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    styles = {"features": ("#4C72B0", "-"), "together": ("#C44E52", "--")}
    for ax, s in zip(axes, SCENARIOS):
        for c in curves:
            color, ls = styles[c.row_norm]
            vals = c.metric(s)
            ax.plot(c.epochs, vals.mean(axis=0), color=color, linestyle=ls, marker="o", ms=3,
                    label=f"row_norm={c.row_norm}")
            if len(vals) > 1:
                ax.fill_between(c.epochs, vals.min(axis=0), vals.max(axis=0), color=color, alpha=0.15)
            pop = c.metric(s, who="popularity").mean(axis=0)
            if s == "cold_items":
                ax.plot(c.epochs, pop, color=color, linestyle=":", label=f"popularity (bias rule, {c.row_norm})")
        if s != "cold_items":
            ax.axhline(curves[0].metric(s, who="popularity")[0, 0], color="black", linestyle=":",
                       label="popularity")
        ax.axvline(chosen_epochs, color="grey", alpha=0.5)
        ax.set_title(f"{SCENARIO_TITLES[s]}: precision@10")
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("precision@10 vs epochs (warp, indicators both; mean and min-max over seeds; "
                 f"grey line: chosen {chosen_epochs} epochs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main


def run(args) -> dict:
    """Run the comparison for parsed arguments (data, out, epochs, quick, seed, max_users; see reco-evaluate),
    write OUT/EVALUATION.md and its two plots, and return the decision (row_norm, epochs, ...)."""
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    info = machine_info()
    split, data_desc = load(args)
    print(f"data: {data_desc}", flush=True)
    print("sizes: " + str(split.describe()), flush=True)

    runs = run_configs(split, configurations(), args.epochs, args.seed, args.max_users)
    seeds = [args.seed] if args.quick else [args.seed, 1, 2]
    top = 30 if args.quick else 60
    checkpoints = sorted({e for e in (1, 2, 5, 10, 15, 20, 30, 40, 50, 60) if e <= top} | {args.epochs})
    curves = run_curves(split, checkpoints, seeds, args.max_users)
    decision = decide(runs, curves, args.epochs)
    shipped = run_shipped(split, args.seed, args.max_users)

    plot_configs(args.out / "evaluation.png", runs)
    plot_curves(args.out / "evaluation_epochs.png", curves, decision["epochs"])
    wall = time.perf_counter() - started
    write_report(args.out / "EVALUATION.md", args, data_desc, split, runs, curves, decision, seeds, info,
                 (load_start, os.getloadavg()[0]), wall, shipped)
    print(f"row_norm={decision['row_norm']} epochs={decision['epochs']}; wrote {args.out / 'EVALUATION.md'}, "
          f"{args.out / 'evaluation.png'}, {args.out / 'evaluation_epochs.png'} in {wall / 60:.1f} min")
    return decision

