"""Offline evaluation on logged impressions: the exploration slice as an unbiased test set (replay).

A model retrained on the clicks of what the last model showed learns to repeat it, and the usual offline
test (precision of a candidate's top-k on the logged clicks, :func:`logged_click_precision`) favours
whichever candidate resembles the model that chose what was shown. The explored slots do not have that
bias: with EXPLORATION_RATE > 0 the service fills random slots of an answer with an item drawn uniformly
from *every* eligible item (recommender.model.index._explore), so the chance of an item to be drawn for
a slot does not depend on the serving model.

Estimator: **replay** (Li, Chu, Langford and Wang, "Unbiased offline evaluation of contextual-bandit-based
news article recommendation algorithms", WSDM 2011), per slot. An explored slot (user u, drawn item a,
clicked or not) *matches* a candidate model when a is in the candidate's top-k for u. Because a was drawn
uniformly from the eligible items, a matched slot shows an item drawn uniformly from the candidate's own
top-k, so the click rate over matched slots estimates the candidate's click-through rate per shown item,
at the positions the explored slots had (uniform over the answer: position bias is averaged, the same for
every candidate). Expect about ``k / catalogue size`` of the explored slots to match: the estimate's
standard error is reported, and comparisons need enough explored slots (see docs/ONLINE_EVAL.md).

What it does not see, by design: answers with a candidate list or filters (``context`` "restricted") and
session answers (``context`` "session") are left out, since their eligible items were not the catalogue;
the candidate's top-k is computed now, from its own model, without the fold-in of interactions made after
its training, leaving out what the user has interacted with except the items shown to it in the window
(they were eligible when shown): :func:`exclusions`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Callable, Collection, Iterable, Mapping, Sequence

from .store.connection import store_errors

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Slot:
    """One shown item of a logged answer: ``position`` 1-based; ``pool`` the eligible items an explored
    slot was drawn from (0 for the model's own slots)."""

    recommendation_id: str
    user_id: str
    item_id: str
    position: int
    explored: bool
    clicked: bool
    pool: int
    variant: str
    model_version: str
    context: str
    time: float


@dataclass(frozen=True)
class Estimate:
    """A click-through rate estimate: ``clicks`` of ``shown`` slots, with its binomial standard error and
    95% Wilson interval (``low``, ``high``); ``ctr`` None when nothing was shown."""

    method: str
    clicks: int
    shown: int
    ctr: float | None
    stderr: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, method: str, clicks: int, shown: int) -> "Estimate":
        if shown == 0:
            return cls(method, clicks, 0, None, None, None, None)
        p = clicks / shown
        centre = (p + Z95 ** 2 / (2 * shown)) / (1 + Z95 ** 2 / shown)
        half = Z95 * math.sqrt(p * (1 - p) / shown + Z95 ** 2 / (4 * shown ** 2)) / (1 + Z95 ** 2 / shown)
        return cls(method, clicks, shown, p, math.sqrt(p * (1 - p) / shown), max(0.0, centre - half),
                   min(1.0, centre + half))

    def to_dict(self) -> dict:
        return asdict(self)


def slots_of(impressions: Iterable[Mapping], clicks: Mapping[tuple[str, int], float]) -> list[Slot]:
    """Every shown item of the impression records (ImpressionLog.read) with whether it was clicked
    (``clicks``: (recommendation_id, position) -> time, ImpressionLog.clicks)."""
    out = []
    for imp in impressions:
        rid, explored = imp["recommendation_id"], set(imp["explored"])
        for position, (item, _score) in enumerate(imp["items"], start=1):
            out.append(Slot(rid, imp["user_id"], item, position, position - 1 in explored,
                            (rid, position) in clicks, int(imp["explore_pool"]) if position - 1 in explored else 0,
                            imp["variant"], imp["model_version"], imp.get("context", "user"), float(imp["time"])))
    return out


@store_errors
def read_slots(log, since: float = 0.0, until: float = math.inf, limit: int = 1_000_000) -> list[Slot]:
    """The slots of the impressions shown in [since, until) (at most ``limit`` answers), with their clicks.

    Raises StoreUnavailableError when Redis does not answer.
    """
    return slots_of(log.read(since, until, limit), log.clicks(since))


def replay_slots(slots: Iterable[Slot]) -> list[Slot]:
    """The slots replay can use: explored slots of plain per-user answers (``context`` "user")."""
    return [s for s in slots if s.explored and s.context == "user" and s.user_id]


def replay(slots: Sequence[Slot], top_k: Mapping[str, Collection[str]], method: str = "replay") -> Estimate:
    """Replay estimate of a candidate's CTR per shown item (see the module docstring).

    ``slots`` are explored slots (:func:`replay_slots`); ``top_k`` user id -> the candidate's top-k item
    ids for that user (users it has no answer for match nothing).
    """
    matched = [s for s in slots if s.item_id in top_k.get(s.user_id, ())]
    return Estimate.of(method, sum(s.clicked for s in matched), len(matched))


def logged_ctr(slots: Iterable[Slot], explored: bool | None = None, method: str = "logged") -> Estimate:
    """Click-through rate of the logged slots: all of them (``explored`` None), the explored ones (True) or
    the serving model's own (False). The model's own CTR is what it earned at the positions it chose."""
    chosen = [s for s in slots if explored is None or s.explored == explored]
    return Estimate.of(method, sum(s.clicked for s in chosen), len(chosen))


def logged_click_precision(slots: Iterable[Slot], top_k: Mapping[str, Collection[str]], k: int) -> Estimate:
    """The naive offline estimate: precision@k of the candidate's top-k against the items each user clicked
    in the log (any slot), over the users with a click. Biased towards the model that chose what was shown:
    it is here to be compared with :func:`replay`, not to decide."""
    clicked: dict[str, set[str]] = defaultdict(set)
    for s in slots:
        if s.clicked:
            clicked[s.user_id].add(s.item_id)
    hits = sum(len(items & set(list(top_k.get(user, ()))[:k])) for user, items in clicked.items())
    return Estimate.of("logged_click_precision", hits, k * len(clicked))


def exclusions(slots: Iterable[Slot], seen: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Per user of ``slots``: the items to leave out of a candidate's top-k, i.e. what the user has
    interacted with (``seen``: its seen and negative items now) except the items shown to it in ``slots``,
    which were eligible when they were shown (answers leave seen items out): the candidate is ranked as of
    the start of the logged window, for replay and the naive estimate alike."""
    shown: dict[str, set[str]] = defaultdict(set)
    for s in slots:
        shown[s.user_id].add(s.item_id)
    return {user: set(seen.get(user, ())) - items for user, items in shown.items()}


def top_k_lists(rank: Callable[[str, int, set[str]], list[str] | None], users: Iterable[str], k: int,
                exclude: Mapping[str, set[str]], progress: Callable[[int], None] | None = None) -> dict[str, list[str]]:
    """user -> the candidate's top-k ids, from ``rank(user, k, excluded ids)`` (None: no answer)."""
    out = {}
    for user in users:
        answer = rank(user, k, exclude.get(user, set()))
        if answer is not None:
            out[user] = answer
        if progress is not None:
            progress(1)
    return out


def compare(slots: Sequence[Slot], candidates: Mapping[str, Mapping[str, Collection[str]]], k: int) -> dict:
    """For each candidate (name -> its top-k lists): the replay estimate and the naive one, next to the
    logged CTR of the serving models' own slots and of the explored slots.

    Returns {"k", "answers", "explored_slots", "logged": {...}, "candidates": {name: {"replay", "naive",
    "users"}}}; estimates as :meth:`Estimate.to_dict`.
    """
    usable = replay_slots(slots)
    return {
        "k": k,
        "answers": len({s.recommendation_id for s in slots}),
        "explored_slots": len(usable),
        "logged": {"served": logged_ctr(slots, explored=False, method="logged_served").to_dict(),
                   "explored": logged_ctr(slots, explored=True, method="logged_explored").to_dict()},
        "candidates": {name: {"replay": replay(usable, lists).to_dict(),
                              "naive": logged_click_precision(slots, lists, k).to_dict(),
                              "users": len(lists)}
                       for name, lists in candidates.items()},
    }
