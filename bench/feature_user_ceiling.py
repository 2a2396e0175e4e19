"""How far can users known only by their features be served on the demo world? (issue 15, ask 3)

The weak world (recommender/synthetic.py) draws a user's taste over item clusters, theta, from a Dirichlet
whose parameters its age band, gender and occupation tilt a little; 40% of users state an interest:<genre>
that is their favourite genre half of the time. This script ranks the world's own feature-only test
(``world_split``: the held-back interactions of the world's new users with known items; precision@10,
the evaluation's definition) with:

- ``popularity``: training interaction counts (the baseline of ask 3);
- ``feature oracle``: the best ranking the features allow, computed from the generator's own parameters:
  E[log-odds of choosing item i | the user's features] = log_pop[i] + log E[(theta_c + 0.001)^taste] for the
  item's cluster c (Monte Carlo over the user's Dirichlet, 4,000 draws, weighted by the likelihood of the
  stated interest given each draw's favourite genre) + the item factors' expected contribution. No model can
  know log_pop, the clusters or the Dirichlet parameters exactly; it estimates them from the training data.
- ``truth``: the user's true log-odds (its realised theta and item factors): what the features do not say.
- ``LightFM (shipped kind)``: ``LFMRecommender(row_norm="features")``, 30 epochs, features (its answers
  for feature-only users; the service may blend popularity in, chosen on validation).

    .venv/bin/python bench/feature_user_ceiling.py [--seeds 42,1,2] [--size 3000x2000]

Output: a markdown table on stdout (docs/WORLD.md quotes it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_world import Scorer  # noqa: E402

from recommender.evaluation import evaluate  # noqa: E402
from recommender.evaluation.splits import world_split  # noqa: E402
from recommender.model import LFMRecommender  # noqa: E402
from recommender.synthetic import GENRES, make_world  # noqa: E402

K = 10
DRAWS = 4000


def oracle_scores(t, user: int, stated: str | None, rng: np.random.Generator) -> np.ndarray:
    """E[log-odds | features] of every item (truth's item order) for one user, by Monte Carlo."""
    theta = rng.dirichlet(t.taste_prior[user], size=DRAWS)  # (draws, clusters)
    weight = np.ones(DRAWS)
    if stated is not None:
        favourite = np.argmax(theta @ t.genre_given_cluster, axis=1)
        g = GENRES.index(stated)
        weight = t.interest_accuracy * (favourite == g) + (1 - t.interest_accuracy) / len(GENRES)
    expected = (weight[:, None] * (theta + 1e-3) ** t.taste).sum(axis=0) / weight.sum()  # (clusters,)
    # w_u ~ N(0, I / 8), so E[exp(item_taste * w_u . v_i)] = exp(item_taste^2 |v_i|^2 / 16)
    factors = t.item_taste ** 2 * (t.item_factors ** 2).sum(axis=1) / (2 * t.user_factors.shape[1])
    return t.log_pop + np.log(expected[t.cluster]) + factors


def measure(seed: int, users: int, items: int) -> dict[str, float]:
    world = make_world(users, items, seed=seed)
    t = world.truth
    split = world_split(world.interactions, world.user_features, world.item_features, world.holdout,
                        world.new_users, world.new_items)
    scenario = split.scenarios["cold_users"]
    model = LFMRecommender(row_norm="features", random_state=seed)
    model.fit(split.train, split.user_features, split.item_features, epochs=30)
    base = evaluate(model, scenario, K, max_users=users + 1)
    cols = np.array([t.item_ids.index(i) for i in model.iid_map.index])  # the model's item order in truth's
    user_pos = {u: k for k, u in enumerate(t.user_ids)}
    stated = {u: f.split(":", 1)[1] for u, f in zip(world.user_features["user_id"], world.user_features["feature"])
              if f.startswith("interest:")}
    rng = np.random.default_rng(seed)
    cache: dict[str, np.ndarray] = {}

    def oracle(u: str) -> np.ndarray:
        if u not in cache:
            cache[u] = oracle_scores(t, user_pos[u], stated.get(u), rng)[cols]
        return cache[u]

    def truth(u: str) -> np.ndarray:
        return t.logits([u])[0][cols]

    out = {"popularity": base["popularity"][f"precision@{K}"], "LightFM (shipped kind)": base["model"][f"precision@{K}"]}
    out["feature oracle"] = evaluate(Scorer(model, oracle, "oracle"), scenario, K, max_users=users + 1)["model"][f"precision@{K}"]
    out["truth"] = evaluate(Scorer(model, truth, "truth"), scenario, K, max_users=users + 1)["model"][f"precision@{K}"]
    out["users"] = base["users"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="42,1,2")
    p.add_argument("--size", default="3000x2000")
    args = p.parse_args(argv)
    users, items = (int(x) for x in args.size.split("x"))
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    for s in seeds:
        results[s] = measure(s, users, items)
        print(f"seed {s}: " + ", ".join(f"{k} {v:.4f}" if k != "users" else f"{v} users"
                                        for k, v in results[s].items()), flush=True)
    print(f"\nFeature-only users, precision@{K} on `make_world({users}, {items}, seed)`, world split\n")
    print("| ranker | " + " | ".join(f"seed {s} ({results[s]['users']} users)" for s in seeds) + " |")
    print("|---|" + "---:|" * len(seeds))
    for name in ("popularity", "LightFM (shipped kind)", "feature oracle", "truth"):
        cells = [f"{results[s][name]:.4f} ({results[s][name] / results[s]['popularity']:.2f}x)" for s in seeds]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
