"""Choosing a model's configuration and serving policy by validation, within a time budget.

The trainer calls :func:`select` at every retrain with the store's snapshot. It holds out a slice
(:func:`validation_split`: 10% of the users with features as new users, 5% of the items with features
as new items, the last 20% of every other user's interactions), trains candidate configurations on the
rest and measures each population the service serves:

================= =====================================================================================
population        measured as
================= =====================================================================================
``warm_users``    precision@k of known users on their held-out last interactions (training items
                  excluded)
``feature_users`` precision@k of held-out users scored through their features alone, whole history
``fresh_users``   precision@k of held-out users with their first ``reveal`` interactions folded in,
                  on the rest
``new_items``     AUC of held-out items ranked among themselves through their features, per user
================= =====================================================================================

each next to popularity on the same users (``popularity_precision@k``, ``popularity_auc``). Search:

1. the configuration: ``row_norm`` (the candidates unless fixed) and the number of epochs (early stopping
   on warm precision@k, checkpoints every ``step`` epochs; a fixed number skips it), best warm precision
   first, fewer epochs on ties;
2. the serving policy on that model (recommender.model.foldin): the warm users' item-item blend (the
   ranker, cosine co-occurrence or the ridge item-item model with one of two penalties, and its weight), the
   feature users' popularity blend, the fresh users' fold-in and blends. A population whose best strategy
   loses to popularity on validation is served popularity: it is never served what lost.

Everything tried is recorded (``candidates``) with its score and time, and travels with the model.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from .evaluation import Scenario, Split, evaluate, holdout_split
from .model import LFMRecommender
from .model.foldin import RIDGE_K_ITEMS, Blend, FoldIn, ServingPolicy

log = logging.getLogger(__name__)

ROW_NORM_CANDIDATES = ("features", "together", "none")
POPULATIONS = ("warm_users", "feature_users", "fresh_users", "new_items")
WARM_COOC = (0.0, 0.25, 0.5, 1.0, 2.0)
# the item-item rankers warm users may be blended with: (ServingPolicy.item_item, ridge_l2)
ITEM_ITEM_CANDIDATES = (("cosine", 8.0), ("ridge", 2.0), ("ridge", 8.0))
# build time of the ridge ranker per item, measured (2 cores, 2026-11-30): with 200 predictors per item
# 20,000 items in 57 s and 2,000 in 1 s; with 100 (above RIDGE_K_ITEMS items) 100,000 items in 55 s
RIDGE_SECONDS_PER_ITEM = 0.003
RIDGE_SECONDS_PER_ITEM_LARGE = 0.0008
FEATURE_POPULARITY = (0.0, 0.5, 1.0, 2.0, 4.0)
FRESH_FOLD_INS = (FoldIn("off"), FoldIn("mean", strength=0.5), FoldIn("mean", strength=1.0),
                  FoldIn("ls", strength=1.0, prior=10.0, negatives=2.0))
FRESH_COOC = (0.0, 0.5, 1.0, 2.0)
FRESH_POPULARITY = (0.0, 1.0)


def validation_split(interactions: pd.DataFrame, user_features: pd.DataFrame | None,
                     item_features: pd.DataFrame | None, *, cold_user_frac: float = 0.1,
                     cold_item_frac: float = 0.05, test_fraction: float = 0.2, reveal: int = 5,
                     seed: int = 0) -> Split:
    """The held-out slice: :func:`recommender.evaluation.holdout_split` plus a ``fresh`` scenario.

    ``fresh``: the held-out users with at least ``reveal + 2`` positive interactions, their first
    ``reveal`` (by time) given as interactions the model did not train on, the rest to find. Fractions
    too large for the data (or no features on a side) leave that scenario out.
    """
    try:
        split = holdout_split(interactions, user_features, item_features, cold_user_frac=cold_user_frac,
                              cold_item_frac=cold_item_frac, test_fraction=test_fraction, seed=seed)
    except ValueError:  # too few users or items with features to hold any out: warm users only
        from .evaluation import temporal_split

        train, test = temporal_split(interactions, test_fraction)
        return Split(train, user_features, item_features, {"warm": Scenario("warm", train, test)})
    return add_fresh(split, reveal)


def add_fresh(split: Split, reveal: int = 5) -> Split:
    """Add the ``fresh`` scenario to ``split`` (in place) from its ``cold_users`` one, and return it.

    The cold users with at least ``reveal + 2`` positive interactions (weight > 0) give their first
    ``reveal`` by time as interactions the model did not train on (folded in at request time); the rest
    is the truth. Without a cold-user scenario, or with no eligible user, the split is unchanged.
    """
    cold = split.scenarios.get("cold_users")
    if cold is None:
        return split
    history = cold.test
    if "weight" in history.columns:
        history = history[history["weight"].to_numpy(dtype=np.float64) > 0]
    order = ["user_id", "timestamp"] if "timestamp" in history.columns else ["user_id"]
    history = history.sort_values(order, kind="stable")
    rank = history.groupby("user_id").cumcount()
    counts = history.groupby("user_id")["user_id"].transform("size")
    eligible = counts >= reveal + 2
    revealed, rest = history[eligible & (rank < reveal)], history[eligible & (rank >= reveal)]
    if len(rest):
        shown = {u: dict.fromkeys(g["item_id"], 1.0) for u, g in revealed.groupby("user_id")}
        split.scenarios["fresh"] = Scenario("fresh", revealed.reset_index(drop=True), rest.reset_index(drop=True),
                                            user_features=cold.user_features, interactions=shown)
    return split


@dataclass
class Selection:
    """What :func:`select` chose, and what it measured on the way."""

    row_norm: str
    epochs: int
    policy: ServingPolicy
    model: LFMRecommender = field(repr=False)  # the validation model with the chosen configuration
    populations: dict  # population -> metrics of the chosen model and policy
    candidates: list  # every configuration and policy tried: parameters, score, seconds
    seconds: float
    budget_exhausted: bool

    def metrics(self) -> dict:
        """The JSON-able part (model metadata, GET /model)."""
        return {"chosen": {"row_norm": self.row_norm, "epochs": self.epochs, "policy": self.policy.to_dict()},
                "populations": self.populations, "candidates": self.candidates,
                "selection_seconds": round(self.seconds, 2), "budget_exhausted": self.budget_exhausted}


def select(split: Split, params: dict, *, row_norms: Iterable[str] = ROW_NORM_CANDIDATES,
           epochs: int | None = None, max_epochs: int = 60, step: int = 5, patience: int = 2,
           budget_seconds: float = 300.0, k: int = 10, max_users: int = 500, num_threads: int = 1,
           blends: bool = True, fold_in: bool = True, item_item: str = "auto",
           progress: Callable[[str], None] | None = None) -> Selection:
    """Train candidate configurations on ``split.train`` and pick the configuration and serving policy.

    ``params`` are LFMRecommender keyword arguments (without row_norm); ``epochs`` None searches the
    number of epochs (early stopping), an int fixes it. The budget is checked between checkpoints: the
    first configuration always gets at least one checkpoint; later ones are skipped once it is spent.
    ``blends`` False keeps every population on LightFM's own scores (or popularity where it wins);
    ``fold_in`` False never moves a user's vector by interactions the model did not train on.
    ``item_item`` limits the item-item rankers tried for the warm blend ("auto": cosine and ridge).

    Raises
    ------
    ValueError
        ``split`` has no warm scenario, or nothing could be trained.
    """
    started = time.monotonic()
    say = progress or (lambda message: None)
    warm = split.scenarios.get("warm")
    if warm is None:
        raise ValueError("the validation split has no warm users to measure")
    candidates: list[dict] = []
    best = None  # (score, -epochs, row_norm, model)
    exhausted = False
    for row_norm in row_norms:
        if best is not None and time.monotonic() - started > budget_seconds:
            exhausted = True
            candidates.append({"row_norm": row_norm, "skipped": "time budget spent"})
            continue
        model = LFMRecommender(row_norm=row_norm, **params)
        checkpoints = [epochs] if epochs is not None else list(range(step, max_epochs + 1, step))
        done, best_here, since_best = 0, -1.0, 0
        for target in checkpoints:
            t0 = time.monotonic()
            if done == 0:
                model.fit(split.train, split.user_features, split.item_features, epochs=target,
                          num_threads=num_threads)
            else:
                model.fit_partial(split.train, epochs=target - done, num_threads=num_threads)
            done = target
            score = evaluate(model, warm, (k,), max_users=max_users)["model"][f"precision@{k}"]
            score = -1.0 if math.isnan(score) else score
            candidates.append({"row_norm": row_norm, "epochs": target, f"warm_precision@{k}": round(score, 4),
                               "seconds": round(time.monotonic() - t0, 2)})
            say(f"selection: row_norm={row_norm} epochs={target} warm precision@{k}={score:.4f}")
            if best is None or (score, -target) > best[:2]:
                best = (score, -target, row_norm, model.clone())
            if score > best_here * 1.001:
                best_here, since_best = score, 0
            else:
                since_best += 1
            if since_best >= patience or time.monotonic() - started > budget_seconds:
                exhausted = exhausted or time.monotonic() - started > budget_seconds
                break
    if best is None:
        raise ValueError("no configuration could be trained")
    _, neg_epochs, row_norm, model = best
    policy, policy_candidates = choose_policy(model, split, k=k, max_users=max_users, blends=blends,
                                              fold_in=fold_in, progress=say, deadline=started + budget_seconds,
                                              item_item=item_item)
    candidates.extend(policy_candidates)
    model.set_policy(policy)
    populations = measure(model, split, k=k, max_users=max_users)
    return Selection(row_norm, -neg_epochs, policy, model, populations, candidates,
                     time.monotonic() - started, exhausted)


def select_with_settings(split: Split, settings, params: dict, *, progress: Callable[[str], None] | None = None,
                         **overrides) -> Selection:
    """:func:`select` with the service's settings (recommender.settings.Settings): ROW_NORM, EPOCHS,
    TRAIN_BUDGET_SECONDS, EVAL_K, TRAIN_THREADS, BLENDS, ITEM_ITEM, FOLD_IN; ``overrides`` replace any of its keyword
    arguments. The trainer and reco-evaluate's "as it ships" section both call this, so they cannot drift."""
    kwargs = dict(row_norms=settings.row_norms, epochs=settings.fixed_epochs,
                  budget_seconds=settings.train_budget_seconds, k=settings.eval_k,
                  num_threads=settings.train_threads, blends=settings.blends, fold_in=settings.fold_in,
                  item_item=settings.item_item, progress=progress)
    kwargs.update(overrides)
    return select(split, params, **kwargs)


def choose_policy(model: LFMRecommender, split: Split, *, k: int = 10, max_users: int = 500,
                  blends: bool = True, fold_in: bool = True, progress: Callable[[str], None] | None = None,
                  deadline: float | None = None, item_item: str = "auto") -> tuple[ServingPolicy, list[dict]]:
    """The serving policy that scores best on each population of ``split``, and every policy tried.

    Populations are searched one after the other (their parameters do not interact: each applies to
    its own users). A population whose best score is below popularity's is served popularity. Under
    ``item_item="auto"`` a ridge item-item ranker is only built when its estimated build time
    (RIDGE_SECONDS_PER_ITEM per item, or RIDGE_SECONDS_PER_ITEM_LARGE above RIDGE_K_ITEMS items) ends before
    ``deadline`` (time.monotonic()); otherwise it is recorded as skipped. ``item_item="ridge"`` (the
    operator's choice) is always built and served.
    """
    say = progress or (lambda message: None)
    name = f"precision@{k}"
    tried: list[dict] = []
    policy = ServingPolicy(fresh=Blend())

    def score(scenario: Scenario, candidate: ServingPolicy) -> tuple[float, float]:
        result = evaluate(model, scenario, (k,), max_users=max_users, policy=candidate)
        return _number(result["model"][name]), _number(result["popularity"][name])

    def search(population: str, scenario: Scenario | None, options: list[tuple[dict, ServingPolicy]]):
        if scenario is None or not len(scenario.test):
            return None
        results = []
        for described, candidate in options:
            value, popularity = score(scenario, candidate)
            results.append((value, described, candidate))
            tried.append({"population": population, **described, name: round(value, 4),
                          f"popularity_{name}": round(popularity, 4)})
        value, described, candidate = max(results, key=lambda r: r[0])  # the first of equals: the simplest
        say(f"selection: {population}: {described} {name}={value:.4f} (popularity {popularity:.4f})")
        return value, popularity, candidate

    cooc_ok = blends and model.neighbors is not None
    if cooc_ok:
        best = None
        built = {model.neighbors.spec: model.neighbors}  # each ranker is built once, then its weights tried
        allowed = ITEM_ITEM_CANDIDATES if item_item == "auto" else [c for c in ITEM_ITEM_CANDIDATES
                                                                      if c[0] == item_item]
        for kind, l2 in allowed:
            if (kind == "ridge" and item_item == "auto" and deadline is not None  # ITEM_ITEM=ridge: always
                    and time.monotonic() + model.n_items * (RIDGE_SECONDS_PER_ITEM if model.n_items <= RIDGE_K_ITEMS
                                                            else RIDGE_SECONDS_PER_ITEM_LARGE) > deadline):
                tried.append({"population": "warm_users", "item_item": kind, "ridge_l2": l2,
                              "skipped": "time budget: the ridge build would not end in it"})
                continue
            base = replace(policy, item_item=kind, ridge_l2=l2)
            model.set_policy(base, built)
            built[model.neighbors.spec] = model.neighbors
            found = search("warm_users", split.scenarios.get("warm"),
                           [({"item_item": kind, "ridge_l2": l2, "cooc": c}, replace(base, warm=Blend(cooc=c)))
                            for c in (WARM_COOC if kind == "cosine" or item_item == "ridge" else WARM_COOC[1:])])
            if found and (best is None or found[0] > best[0]):
                best = found
        if best:
            policy = best[2]
            if policy.warm.cooc == 0 and item_item != "ridge":  # no warm blend: fresh users keep the cosine one
                policy = replace(policy, item_item="cosine", ridge_l2=ServingPolicy().ridge_l2)
        if item_item == "ridge" and policy.item_item != "ridge":  # forced (e.g. no warm users to validate on)
            policy = replace(policy, item_item="ridge", ridge_l2=ServingPolicy().ridge_l2)
        model.set_policy(policy, built)  # the chosen item-item ranker serves the fresh users' search too
    found = search("feature_users", split.scenarios.get("cold_users"),
                   [({"popularity": p}, replace(policy, features=Blend(popularity=p)))
                    for p in (FEATURE_POPULARITY if blends else (0.0,))])
    if found:
        value, popularity, policy = found
        if value < popularity:  # the features lose: serve what won
            policy = replace(policy, feature_users="popularity", features=Blend())
    options = [({"fold_in": f.method, "fold_in_strength": f.strength, "cooc": c, "popularity": p},
                replace(policy, fold_in=f, fresh=Blend(cooc=c, popularity=p)))
               for f, c, p in itertools.product(FRESH_FOLD_INS if fold_in else FRESH_FOLD_INS[:1],
                                                FRESH_COOC if cooc_ok else (0.0,),
                                                FRESH_POPULARITY if blends else (0.0,))]
    found = search("fresh_users", split.scenarios.get("fresh"), options)
    if found:
        value, popularity, policy = found
        if value < popularity:
            policy = replace(policy, fresh_users="popularity", fresh=Blend(), fold_in=FoldIn())
    return policy, tried


def measure(model: LFMRecommender, split: Split, *, k: int = 10, max_users: int = 500) -> dict:
    """Per-population metrics of ``model`` as it serves (its policy), next to popularity on the same users."""
    name = f"precision@{k}"
    out: dict = {}
    for population, scenario_name in (("warm_users", "warm"), ("feature_users", "cold_users"),
                                      ("fresh_users", "fresh")):
        scenario = split.scenarios.get(scenario_name)
        if scenario is None or not len(scenario.test):
            continue
        result = evaluate(model, scenario, (k,), max_users=max_users)
        out[population] = {name: _round(result["model"][name]), f"popularity_{name}": _round(result["popularity"][name]),
                           "users": result["users"], "strategies": result["strategies"]}
    scenario = split.scenarios.get("cold_items")
    if scenario is not None and len(scenario.test):
        result = evaluate(model, scenario, (k,), max_users=max_users)
        out["new_items"] = {"auc": _round(result["model"]["auc"]), "popularity_auc": _round(result["popularity"]["auc"]),
                            name: _round(result["model"][name]), "users": result["users"],
                            "items": result["candidates"]}
    return out


def _number(value: float) -> float:
    return -1.0 if value is None or math.isnan(value) else float(value)


def _round(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)
