"""How far can new items be ranked through their features on the demo world? (issue 15, ask 4)

The weak world (recommender/synthetic.py) draws each choice with log-odds ``log_pop[i] + taste *
log(theta[u, cluster[i]]) + item_taste * w_u . v_i``. A new item's features (genre, tag, decade) say only a
little about its latent cluster and its popularity, so there is a ceiling to any feature-based ranking of new
items, whatever the model. This script measures it on the world's own cold-item test (``world_split``: the
held-back interactions of known users with the world's new items; AUC per user among the new items, the same
definition as ``recommender.evaluation``), with rankers that are handed parts of the ground truth:

- ``truth``: the true log-odds (every latent part; the Gumbel noise of the draw is all that is left);
- ``cluster + popularity``: the item's true cluster and its true log-popularity, no item factors;
- ``popularity``: the true log-popularity alone;
- ``feature posterior``: each user's TRUE cluster tastes (no model knows them; it estimates them from a few
  dozen interactions), the item's cluster posterior given its features by naive Bayes (counts over the known
  items), plus the mean log-popularity of the item's decade among known items. A model that learned the
  users' tastes perfectly and used the features optimally would sit near this line: it is the practical
  ceiling for ranking new items through their features;
- ``LightFM (shipped kind)``: ``LFMRecommender(row_norm="features")``, 30 epochs, features, as the
  evaluation measures it (``--no-model`` skips it: ~40 s per seed).

    .venv/bin/python bench/new_item_ceiling.py [--seeds 42,1,2] [--size 3000x2000] [--no-model]

Output: a markdown table on stdout (docs/WORLD.md quotes it).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from recommender.evaluation import auc_score, evaluate
from recommender.evaluation.splits import world_split
from recommender.model import LFMRecommender
from recommender.synthetic import make_world


def per_user_auc(test, candidates: list[str], item_pos: dict[str, int], user_pos: dict[str, int], score) -> float:
    """Mean over users of P(a held-out new item outscores a new item the user did not take), ties one half."""
    cols = np.array([item_pos[i] for i in candidates])
    out = []
    for user, group in test.groupby("user_id"):
        s = score(user_pos[user])[cols]
        auc = auc_score(s, np.isin(candidates, group["item_id"].to_numpy()))
        if not np.isnan(auc):  # a user with no positive or no negative among the new items
            out.append(auc)
    return float(np.mean(out))


def feature_posterior(world) -> tuple[np.ndarray, np.ndarray]:
    """(P(cluster | item features) by naive Bayes with add-one counts over the known items, (n_items, clusters);
    mean log-popularity of the item's decade among known items, (n_items,))."""
    t = world.truth
    n_clusters = t.theta.shape[1]
    new = set(world.new_items)
    feats = world.item_features.groupby("item_id")["feature"].agg(list).to_dict()
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.ones(n_clusters))
    prior = np.ones(n_clusters)
    for j, item in enumerate(t.item_ids):
        if item in new:
            continue
        prior[t.cluster[j]] += 1
        for f in feats.get(item, ()):
            counts[f][t.cluster[j]] += 1
    post = np.zeros((len(t.item_ids), n_clusters))
    for j, item in enumerate(t.item_ids):
        logp = np.log(prior / prior.sum())
        for f in feats.get(item, ()):
            logp = logp + np.log(counts[f] / prior)
        p = np.exp(logp - logp.max())
        post[j] = p / p.sum()
    decade = np.array([next((f for f in feats.get(i, ()) if f.startswith("decade:")), "") for i in t.item_ids])
    known = np.array([i not in new for i in t.item_ids])
    mean_pop = {d: t.log_pop[known & (decade == d)].mean() for d in set(decade)}
    return post, np.array([mean_pop[d] for d in decade])


def measure(seed: int, users: int, items: int, with_model: bool) -> dict[str, float]:
    world = make_world(users, items, seed=seed)
    split = world_split(world.interactions, world.user_features, world.item_features, world.holdout,
                        world.new_users, world.new_items)
    scenario = split.scenarios["cold_items"]
    t = world.truth
    user_pos = {u: k for k, u in enumerate(t.user_ids)}
    item_pos = {i: k for k, i in enumerate(t.item_ids)}
    taste = lambda u: t.taste * np.log(t.theta[u, t.cluster] + 1e-3)  # noqa: E731
    post, decade_pop = feature_posterior(world)
    rankers = {
        "truth": lambda u: taste(u) + t.log_pop + t.item_taste * t.item_factors @ t.user_factors[u],
        "cluster + popularity": lambda u: taste(u) + t.log_pop,
        "popularity": lambda u: t.log_pop,
        "feature posterior": lambda u: np.log(post @ (t.theta[u] + 1e-3) ** t.taste) + decade_pop,
    }
    out = {name: per_user_auc(scenario.test, list(scenario.candidates), item_pos, user_pos, f)
           for name, f in rankers.items()}
    if with_model:
        started = time.perf_counter()
        model = LFMRecommender(row_norm="features", random_state=seed)
        model.fit(split.train, split.user_features, split.item_features, epochs=30)
        res = evaluate(model, scenario, 10, max_users=users + 1)
        out["LightFM (shipped kind)"] = res["model"]["auc"]
        out["popularity rule (model's new-item baseline)"] = res["popularity"]["auc"]
        print(f"seed {seed}: model trained and evaluated in {time.perf_counter() - started:.0f} s", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="42,1,2")
    p.add_argument("--size", default="3000x2000")
    p.add_argument("--no-model", action="store_true")
    args = p.parse_args(argv)
    users, items = (int(x) for x in args.size.split("x"))
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {s: measure(s, users, items, not args.no_model) for s in seeds}
    names = list(next(iter(results.values())))
    print(f"\nNew-item AUC on `make_world({users}, {items}, seed)`, world split (cold items among themselves)\n")
    print("| ranker | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("|---|" + "---:|" * len(seeds))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{results[s][name]:.4f}" for s in seeds) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
