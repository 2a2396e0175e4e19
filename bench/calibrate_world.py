"""The synthetic demo world measured the way MovieLens 100K was measured (issue 15, ask 5).

Builds ``make_world(USERS, ITEMS, seed=SEED)`` (the default, weakly informative world) and treats its
published interactions as a real data set: nothing of its ground truth is used. It prints the table of
issue 15 measured on it, next to the MovieLens 100K figures, with the ratios that the world must
reproduce:

- warm users (ua-like split: the last 10 interactions of each user, by timestamp, are the test; items
  not in train dropped): precision@10 with training items excluded, for ``row_norm="together"`` with
  genre features only and with all item features, ``row_norm="features"``, pure collaborative filtering
  (no features), an item-item model (EASE, lambda 300: recommender.evaluation.ease) and popularity;
- cold users (a random 20% of users never seen in training, features only, whole history as truth):
  ``features`` and ``together`` models, popularity, popularity within the user's age band;
- cold items (a random 20% of items never seen, ranked among themselves through their features): AUC per
  user for ``features`` and ``none``;
- fresh users (the cold users with their first 5 interactions by time revealed, precision@10 on the rest,
  revealed items excluded): popularity, the features-only model, item co-occurrence from the training data.

Every figure comes from ``recommender.evaluation.evaluate`` (the same precision and AUC as the retrain gate
and the reports); scorers that are not LightFM models (co-occurrence, segment popularity) are wrapped
so that ``evaluate`` scores them. Models: WARP, 32 components, lr 0.05, 20 epochs, one thread, seed 42.

    .venv/bin/python bench/calibrate_world.py [--size 3000x2000] [--size 943x1682] [--seed 42] [--epochs 20]
                                              [--strong] [--set KNOB=VALUE ...]

``--strong`` measures the old, strongly informative world (``make_world(..., feature_signal="strong")``) instead;
``--set zipf=0.9`` changes a knob of the weak world (``recommender.synthetic.WeakWorld``) for a calibration trial.
About 1.5-2.5 minutes for 3000 x 2000 and 25-40 s for 943 x 1682 (one thread, on the shared 2-core
development machine, depending on its load); the measured tables are in docs/WORLD.md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields, replace
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommender.evaluation import BASELINE_PROBE_USER, Scenario, cold_item_split, cold_user_split, evaluate
from recommender.evaluation.ease import EASE
from recommender.evaluation.splits import features_by_id
from recommender.model import LFMRecommender
from recommender.synthetic import WeakWorld, make_world

K = 10
P = f"precision@{K}"
# MovieLens 100K, ua split, measured as issue 15 reports (WARP, 32 components, 20 epochs, lr 0.05)
MOVIELENS = {
    "warm_together_genres": 0.137, "warm_together_all": 0.159, "warm_features": 0.254, "warm_cf": 0.252,
    "warm_ease": 0.271, "warm_popularity": 0.121,
    "cold_users_model": 0.489, "cold_users_popularity": 0.501, "cold_users_age_popularity": 0.511,
    "cold_items_auc_features": 0.704, "cold_items_auc_none": 0.711,
    "fresh_popularity": 0.422, "fresh_features": 0.442, "fresh_cooccurrence": 0.457,
}


class Scorer:
    """A stand-in model for :func:`evaluate`: popularity from a fitted LFMRecommender, user scores from ``fn``.

    ``fn(user)`` returns scores over the base model's known items, in its internal order.
    """

    def __init__(self, base: LFMRecommender, fn: Callable[[str], np.ndarray], strategy: str):
        self.base, self.fn, self.strategy = base, fn, strategy
        self.index = base.predict_online(BASELINE_PROBE_USER).index

    def prepare_items(self, item_features):
        return self.base.prepare_items(item_features)

    def predict_online(self, user_id, item_ids=None, user_features=None, item_features=None):
        if user_id == BASELINE_PROBE_USER:
            return self.base.predict_online(user_id, item_features=item_features)
        series = pd.Series(np.asarray(self.fn(user_id), dtype=np.float64).ravel(), index=self.index)
        series.attrs["strategy"] = self.strategy
        return series


def last_n_split(interactions: pd.DataFrame, n: int = K) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens' ua split: the last ``n`` interactions of each user (by timestamp) are test, the rest train.

    Test rows whose item never occurs in train are dropped (no model can rank them).
    """
    order = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    from_end = order.groupby("user_id").cumcount(ascending=False).to_numpy()
    train, test = order[from_end >= n], order[from_end < n]
    test = test[test["item_id"].isin(set(train["item_id"]))]
    return train.reset_index(drop=True), test.reset_index(drop=True)


def user_item_matrix(frame: pd.DataFrame, model: LFMRecommender) -> tuple[sp.csr_matrix, dict[str, int]]:
    """Binary users x items matrix of ``frame`` in the model's item order; rows: users of ``frame``."""
    users = sorted(set(frame["user_id"]))
    row_of = {u: k for k, u in enumerate(users)}
    cols = model.iid_map.reindex(frame["item_id"]).to_numpy()
    ok = ~np.isnan(cols.astype(np.float64))
    rows = frame["user_id"].map(row_of).to_numpy()[ok]
    x = sp.csr_matrix((np.ones(int(ok.sum())), (rows, cols[ok].astype(np.int64))), shape=(len(users), model.n_items))
    x.data[:] = 1.0  # duplicates count once
    return x, row_of


def fit(train: pd.DataFrame, user_features, item_features, row_norm: str, args) -> LFMRecommender:
    model = LFMRecommender(row_norm=row_norm, loss="warp", no_components=32, learning_rate=0.05,
                           random_state=args.seed)
    return model.fit(train, user_features, item_features, epochs=args.epochs, num_threads=1)


def world_stats(world) -> dict:
    """Shape of the published data: the facts that MovieLens 100K is described by."""
    inter = world.interactions
    per_user = inter.groupby("user_id").size()
    per_item = inter.groupby("item_id").size().sort_values(ascending=False)
    n_users, n_items = inter["user_id"].nunique(), inter["item_id"].nunique()
    top = int(round(0.1 * n_items))
    return {"users": n_users, "items": n_items, "interactions": len(inter),
            "density": len(inter) / (n_users * n_items),
            "per_user": (int(per_user.min()), float(per_user.median()), float(per_user.mean()), int(per_user.max())),
            "top_item_users": per_item.iloc[0] / n_users,
            "top10pct_share": per_item.iloc[:top].sum() / len(inter),
            "mean_rating": float(inter["weight"].mean()),
            "user_features": world.user_features.groupby("user_id").size().mean(),
            "item_features": world.item_features.groupby("item_id").size().mean()}


def measure(world, args, say: Callable[[str], None]) -> dict[str, float]:
    """Every figure of the table, measured on the world's published data."""
    out: dict[str, float] = {}
    inter = world.interactions[["user_id", "item_id", "weight", "timestamp"]]
    ufeat, ifeat = world.user_features, world.item_features
    genres_only = ifeat[ifeat["feature"].str.startswith("genre:")]
    users_all = set(inter["user_id"])

    # ---------------------------------------------------------------- warm users (ua-like)
    train, test = last_n_split(inter)
    say(f"warm: {len(train):,} train / {len(test):,} test interactions, {test['user_id'].nunique()} users")
    warm = Scenario("warm", train, test)
    big = len(users_all) + 1
    for key, row_norm, user_f, item_f in (("warm_features", "features", ufeat, ifeat),
                                          ("warm_cf", "features", None, None),
                                          ("warm_together_all", "together", ufeat, ifeat),
                                          ("warm_together_genres", "together", ufeat, genres_only)):
        t0 = time.perf_counter()
        model = fit(train, user_f, item_f, row_norm, args)
        res = evaluate(model, warm, (K,), max_users=big)
        out[key] = res["model"][P]
        out["warm_popularity"] = res["popularity"][P]
        say(f"  {key:22s} P@10 {out[key]:.3f} (popularity {out['warm_popularity']:.3f}; {time.perf_counter() - t0:.0f} s)")
        if key == "warm_cf":
            t0 = time.perf_counter()
            res = evaluate(EASE(300.0).fit(train), warm, (K,), max_users=big)
            out["warm_ease"] = res["model"][P]
            say(f"  {'warm_ease':22s} P@10 {out['warm_ease']:.3f} ({time.perf_counter() - t0:.0f} s)")

    # ---------------------------------------------------------------- cold users, fresh users
    train, test = cold_user_split(inter, ufeat, frac=0.2, seed=args.seed)
    cold_feats = features_by_id(ufeat, "user_id", test["user_id"].unique())
    cold = Scenario("cold_users", train, test, user_features=cold_feats)
    say(f"cold users: {test['user_id'].nunique()} users held out, {len(test):,} test interactions")
    # fresh users: the same held-out users, their first 5 interactions revealed
    order = test.sort_values(["user_id", "timestamp"], kind="stable")
    rank = order.groupby("user_id").cumcount().to_numpy()
    revealed, rest = order[rank < 5], order[rank >= 5]
    fresh = Scenario("fresh", revealed, rest, user_features=cold_feats)
    for key, row_norm in (("features", "features"), ("together", "together")):
        t0 = time.perf_counter()
        model = fit(train, ufeat, ifeat, row_norm, args)
        res = evaluate(model, cold, (K,), max_users=big)
        out[f"cold_users_{key}"] = res["model"][P]
        out["cold_users_popularity"] = res["popularity"][P]
        say(f"  cold_users_{key:11s} P@10 {res['model'][P]:.3f} (popularity {res['popularity'][P]:.3f}; "
            f"{time.perf_counter() - t0:.0f} s)")
        if key != "features":
            continue
        res = evaluate(model, fresh, (K,), max_users=big)
        out["fresh_features"], out["fresh_popularity"] = res["model"][P], res["popularity"][P]
        # popularity within the user's age band
        age_of = {u: next((f for f in feats if f.startswith("age:")), None) for u, feats in cold_feats.items()}
        train_age = train["user_id"].map(_first_feature(ufeat, "age:"))
        band_pop = {}
        for band in set(age_of.values()):
            sub, _ = user_item_matrix(train[(train_age == band).to_numpy()], model)
            band_pop[band] = np.asarray(sub.sum(axis=0)).ravel() + 1e-6 * model.popularity.scores
        x, _ = user_item_matrix(train, model)
        res = evaluate(Scorer(model, lambda u: band_pop[age_of[u]], "age-popularity"), cold, (K,), max_users=big)
        out["cold_users_age_popularity"] = res["model"][P]
        # item co-occurrence from the training data: sum of the revealed items' co-occurrence counts
        co = (x.T @ x).tocsr()
        co.setdiag(0)
        items_of = revealed.groupby("user_id")["item_id"].agg(list).to_dict()
        pos = model.iid_map

        def cooccurrence(u: str) -> np.ndarray:
            cols = [pos[i] for i in items_of.get(u, ()) if i in pos.index]
            score = np.asarray(co[cols].sum(axis=0)).ravel() if cols else np.zeros(model.n_items)
            return score + 1e-6 * model.popularity.scores / model.popularity.scores.max()

        res = evaluate(Scorer(model, cooccurrence, "cooccurrence"), fresh, (K,), max_users=big)
        out["fresh_cooccurrence"] = res["model"][P]
        say(f"  cold_users_age_popularity P@10 {out['cold_users_age_popularity']:.3f}; fresh users: popularity "
            f"{out['fresh_popularity']:.3f}, features {out['fresh_features']:.3f}, co-occurrence "
            f"{out['fresh_cooccurrence']:.3f}")

    # ---------------------------------------------------------------- cold items
    train, test = cold_item_split(inter, ifeat, frac=0.2, seed=args.seed + 1)
    cold_items = sorted(set(inter["item_id"]) - set(train["item_id"]))
    ifeats = features_by_id(ifeat, "item_id", cold_items)
    scenario = Scenario("cold_items", train, test, item_features=ifeats, candidates=sorted(ifeats))
    say(f"cold items: {len(cold_items)} items held out, {len(test):,} test interactions")
    for key, row_norm in (("features", "features"), ("none", "none")):
        t0 = time.perf_counter()
        model = fit(train, ufeat, ifeat, row_norm, args)
        res = evaluate(model, scenario, (K,), max_users=big)
        out[f"cold_items_auc_{key}"] = res["model"]["auc"]
        out["cold_items_auc_popularity"] = res["popularity"]["auc"]
        say(f"  cold_items_auc_{key:8s} {res['model']['auc']:.3f} (popularity rule {res['popularity']['auc']:.3f}; "
            f"{time.perf_counter() - t0:.0f} s)")
    return out


def _first_feature(frame: pd.DataFrame, prefix: str) -> Mapping[str, str]:
    """{id: its first feature starting with ``prefix``} (e.g. each user's age band)."""
    rows = frame[frame["feature"].str.startswith(prefix)]
    return dict(zip(rows.iloc[:, 0], rows["feature"]))


def print_table(name: str, stats: dict, m: dict[str, float]) -> None:
    """The measured table next to MovieLens 100K, with the ratios and orderings issue 15 asks for."""
    ml = MOVIELENS
    pu = stats["per_user"]
    print(f"\n## {name}")
    print(f"{stats['users']} users x {stats['items']} items (published), {stats['interactions']:,} interactions, "
          f"density {stats['density']:.1%}; per user min {pu[0]} / median {pu[1]:.0f} / mean {pu[2]:.0f} / max {pu[3]}; "
          f"top item reached by {stats['top_item_users']:.0%} of users, top 10% of items hold "
          f"{stats['top10pct_share']:.0%} of interactions; mean rating {stats['mean_rating']:.2f}; "
          f"features per user {stats['user_features']:.1f}, per item {stats['item_features']:.1f}\n")
    rows = [
        ("warm P@10", "row_norm=together, genres only", "warm_together_genres"),
        ("warm P@10", "row_norm=together, all item features", "warm_together_all"),
        ("warm P@10", "row_norm=features", "warm_features"),
        ("warm P@10", "pure CF (no features)", "warm_cf"),
        ("warm P@10", "EASE item-item, lambda 300", "warm_ease"),
        ("warm P@10", "popularity", "warm_popularity"),
        ("cold users P@10", "model, row_norm=features", "cold_users_features"),
        ("cold users P@10", "model, row_norm=together", "cold_users_together"),
        ("cold users P@10", "popularity", "cold_users_popularity"),
        ("cold users P@10", "popularity within age band", "cold_users_age_popularity"),
        ("cold items AUC", "row_norm=features", "cold_items_auc_features"),
        ("cold items AUC", "row_norm=none", "cold_items_auc_none"),
        ("fresh users P@10", "popularity", "fresh_popularity"),
        ("fresh users P@10", "features only", "fresh_features"),
        ("fresh users P@10", "item co-occurrence", "fresh_cooccurrence"),
    ]
    ml_cold = {"cold_users_features": ml["cold_users_model"], "cold_users_together": ml["cold_users_model"]}
    print("| population | what | this world | MovieLens 100K |")
    print("|---|---|---:|---:|")
    for pop, what, key in rows:
        ref = ml.get(key, ml_cold.get(key))
        print(f"| {pop} | {what} | {m[key]:.3f} | {'' if ref is None else f'{ref:.3f}'} |")
    ratios = [
        ("features / pure CF (warm)", m["warm_features"] / m["warm_cf"], ml["warm_features"] / ml["warm_cf"]),
        ("together (all) / pure CF (warm)", m["warm_together_all"] / m["warm_cf"], ml["warm_together_all"] / ml["warm_cf"]),
        ("popularity / features (warm)", m["warm_popularity"] / m["warm_features"],
         ml["warm_popularity"] / ml["warm_features"]),
        ("EASE / features (warm)", m["warm_ease"] / m["warm_features"], ml["warm_ease"] / ml["warm_features"]),
        ("model features / popularity (cold users)", m["cold_users_features"] / m["cold_users_popularity"],
         ml["cold_users_model"] / ml["cold_users_popularity"]),
        ("age-band popularity / popularity (cold users)", m["cold_users_age_popularity"] / m["cold_users_popularity"],
         ml["cold_users_age_popularity"] / ml["cold_users_popularity"]),
        ("features only / popularity (fresh users)", m["fresh_features"] / m["fresh_popularity"],
         ml["fresh_features"] / ml["fresh_popularity"]),
        ("co-occurrence / popularity (fresh users)", m["fresh_cooccurrence"] / m["fresh_popularity"],
         ml["fresh_cooccurrence"] / ml["fresh_popularity"]),
    ]
    print("\n| ratio | this world | MovieLens 100K |")
    print("|---|---:|---:|")
    for what, here, there in ratios:
        print(f"| {what} | {here:.2f} | {there:.2f} |")
    checks = [
        ("warm: features >= pure CF (within 0.01)", m["warm_features"] >= m["warm_cf"] - 0.01),
        ("warm: pure CF > together, by 10% or more", m["warm_together_all"] < 0.9 * m["warm_cf"]),
        ("warm: popularity 0.3-0.7 of the model", 0.3 <= m["warm_popularity"] / m["warm_features"] <= 0.7),
        ("cold users: model within 0.93-1.05 of popularity",
         0.93 <= m["cold_users_features"] / m["cold_users_popularity"] <= 1.05),
        ("cold items: AUC 0.60-0.80", 0.60 <= m["cold_items_auc_features"] <= 0.80),
    ]
    print("\norderings issue 15 asks the world to reproduce:")
    for what, ok in checks:
        print(f"  [{'x' if ok else ' '}] {what}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", action="append", help="USERSxITEMS (repeatable; default 3000x2000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--strong", action="store_true", help="measure the old strongly informative world")
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                        help="change a knob of the weak world (a field of recommender.synthetic.WeakWorld), "
                             "e.g. --set zipf=0.9 (repeatable)")
    args = parser.parse_args(argv)
    knobs = {f.name: f.type for f in fields(WeakWorld)}
    changes = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in knobs:
            parser.error(f"--set {item}: no knob {name!r}; knobs: {', '.join(knobs)}")
        changes[name] = int(value) if knobs[name] in (int, "int") else float(value)
    weak = replace(WeakWorld(), **changes)
    sizes = args.size or ["3000x2000"]
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {msg}", flush=True)

    for size in sizes:
        n_users, n_items = (int(v) for v in size.lower().split("x"))
        kind = "strong" if args.strong else "weak"
        say(f"make_world({n_users}, {n_items}, seed={args.seed}, feature_signal={kind!r})")
        world = make_world(n_users, n_items, seed=args.seed, feature_signal=kind, weak=weak)
        stats = world_stats(world)
        say(f"{stats['interactions']:,} published interactions")
        m = measure(world, args, say)
        strong = ', feature_signal="strong"' if args.strong else ""
        if changes and not args.strong:
            strong += f", weak=WeakWorld({', '.join(f'{k}={v}' for k, v in changes.items())})"
        print_table(f"synthetic demo world make_world({n_users}, {n_items}, seed={args.seed}{strong}); "
                    f"WARP, 32 components, {args.epochs} epochs, lr 0.05", stats, m)


if __name__ == "__main__":
    main()
