"""Fresh users on data the trainer never saw: does the policy it chose beat popularity and features alone?

The trainer chooses its serving policy on a validation split of the published interactions
(recommender.selection). This script repeats the trainer's path (selection, then the final model on every
published interaction, with the chosen configuration and policy) on the weak demo world of ``make run``
(3,000 users x 2,000 items, seed 42), and then asks the world's *new* users, whose interactions were never
published (``World.holdout``), the issue-16 question: their first ``--reveal`` interactions by time are given
as interactions the model did not train on, precision@10 is measured on the rest. Alternatives on the same
users: popularity, features only (no fold-in), co-occurrence only, each fold-in method without blends. Also
the same users with features only (nothing revealed: the feature-only population).

    .venv/bin/python bench/heldout_fresh.py [--users 3000] [--items 2000] [--seed 42] [--out var/reports/heldout_fresh.md]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from recommender.evaluation.metrics import evaluate
from recommender.evaluation.splits import Scenario, features_by_id
from recommender.model import LFMRecommender
from recommender.model.foldin import Blend, FoldIn
from recommender.selection import select, validation_split
from recommender.settings import Settings
from recommender.synthetic import make_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reveal", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default="var/reports/heldout_fresh.md")
    args = parser.parse_args()
    started = time.time()
    world = make_world(args.users, args.items, seed=args.seed)
    settings = Settings()
    params = settings.model_params()
    split = validation_split(world.interactions, world.user_features, world.item_features,
                             seed=settings.random_state or 0)
    chosen = select(split, params, row_norms=settings.row_norms, epochs=settings.fixed_epochs,
                    budget_seconds=settings.train_budget_seconds, k=args.k, progress=print)
    print(f"chosen: row_norm={chosen.row_norm} epochs={chosen.epochs} policy={chosen.policy.to_dict()}", flush=True)
    model = LFMRecommender(row_norm=chosen.row_norm, **params)
    model.fit(world.interactions, world.user_features, world.item_features, epochs=chosen.epochs)
    policy = chosen.policy

    # the world's new users: never published, so neither selection nor the final model saw them
    new_users = set(world.new_users)
    history = world.holdout[world.holdout["user_id"].isin(new_users) & (world.holdout["weight"] > 0)]
    history = history[history["item_id"].isin(set(model.iid_map.index))]
    history = history.sort_values(["user_id", "timestamp"], kind="stable")
    rank = history.groupby("user_id").cumcount()
    counts = history.groupby("user_id")["user_id"].transform("size")
    eligible = counts >= args.reveal + 2
    revealed, rest = history[eligible & (rank < args.reveal)], history[eligible & (rank >= args.reveal)]
    features = features_by_id(world.user_features, "user_id", new_users)
    shown = {u: dict.fromkeys(g["item_id"], 1.0) for u, g in revealed.groupby("user_id")}
    fresh = Scenario("fresh", revealed.reset_index(drop=True), rest.reset_index(drop=True), user_features=features,
                     interactions=shown)
    cold = Scenario("feature_only", history.iloc[:0], history.reset_index(drop=True), user_features=features)

    plain = replace(policy, fresh=Blend(), fold_in=FoldIn("off"))
    options = {
        "chosen policy": policy,
        "features only (no fold-in, no blend)": plain,
        "co-occurrence only (no fold-in, cooc 1)": replace(plain, fresh=Blend(cooc=1.0)),
        "fold-in mean 0.5, no blend": replace(plain, fold_in=FoldIn("mean", strength=0.5)),
        "fold-in mean 1.0, no blend": replace(plain, fold_in=FoldIn("mean", strength=1.0)),
        "fold-in least squares, no blend": replace(plain, fold_in=FoldIn("ls", strength=1.0, prior=10.0,
                                                                          negatives=2.0)),
    }
    rows = []
    popularity = None
    for name, candidate in options.items():
        result = evaluate(model, fresh, (args.k,), max_users=100_000, policy=candidate)
        p, se = result["model"][f"precision@{args.k}"], result["stderr"]["model"][f"precision@{args.k}"]
        popularity = (result["popularity"][f"precision@{args.k}"], result["stderr"]["popularity"][f"precision@{args.k}"])
        rows.append((name, p, se, result["users"]))
        print(f"{name}: precision@{args.k} {p:.4f} ± {se:.4f} ({result['users']} users)", flush=True)
    feature_only = evaluate(model, cold, (args.k,), max_users=100_000, policy=policy)
    lines = ["# Fresh users the trainer never saw (`bench/heldout_fresh.py`)", "",
             f"World: the weak demo world of `make run`, {args.users:,d} users x {args.items:,d} items, seed "
             f"{args.seed}; {len(world.interactions):,d} published interactions. The trainer's path: selection on "
             f"its validation split (chose row_norm={chosen.row_norm}, {chosen.epochs} epochs, fresh users: "
             f"fold-in `{policy.fold_in.method}` strength {policy.fold_in.strength}, blend "
             f"cooc {policy.fresh.cooc} / popularity {policy.fresh.popularity}), then the final model on every "
             f"published interaction.", "",
             f"Test users: the world's {len(new_users)} new users (never published), {fresh.test['user_id'].nunique()} "
             f"with at least {args.reveal + 2} positive interactions with known items; their first {args.reveal} by "
             f"time revealed as interactions the model did not train on, precision@{args.k} on the rest "
             f"(± one standard error over users).", "",
             f"| how fresh users are scored | precision@{args.k} | vs popularity |", "|---|---:|---:|",
             f"| popularity | {popularity[0]:.4f} ± {popularity[1]:.4f} | 1.00x |"]
    for name, p, se, _ in rows:
        lines.append(f"| {name} | {p:.4f} ± {se:.4f} | {p / popularity[0]:.2f}x |")
    fp = feature_only["model"][f"precision@{args.k}"]
    fpop = feature_only["popularity"][f"precision@{args.k}"]
    lines += ["", f"The same users before any interaction (features only, every held-back interaction to find): "
                  f"model {fp:.4f} vs popularity {fpop:.4f} ({fp / fpop:.2f}x).", "",
              f"Run time {time.time() - started:.0f} s."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "popularity": popularity,
                                                    "feature_only": [fp, fpop],
                                                    "chosen": chosen.metrics()["chosen"]}, indent=2))
    print(out.read_text())


if __name__ == "__main__":
    main()
