"""EASE, the linear item-item model (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019):
a reference for the reports, not something the service serves.

With X the binary (users x items) matrix of positive training interactions and G = X'X, EASE's item-item
weights are B = I - P diag(1 / diag P) with P = (G + lambda I)^-1 (so diag B = 0), and a user's scores are
x_u B. The inverse is dense, items x items: O(items^3) time and O(items^2) memory, which is why the service
serves the neighbourhood-restricted version instead (recommender.model.foldin.ItemNeighbors.ridge) and this
module refuses catalogues above MAX_ITEMS. It answers ``predict_online`` as the model does, so
:func:`recommender.evaluation.evaluate` measures it on the same users and candidates.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..features import normalize_id
from .metrics import evaluate
from .splits import Split

MAX_ITEMS = 10_000  # three dense items x items float64 arrays while fitting: ~2.4 GB at this size
L2_GRID = (100.0, 300.0, 1000.0, 3000.0)


class EASE:
    """EASE fitted on one interactions frame (user_id, item_id[, weight]; weight <= 0 is not a positive).

    Parameters
    ----------
    l2 : float
        lambda, the L2 penalty (absolute: it grows with the number of users per item; pick it by validation,
        :func:`ease_reference`).

    Raises
    ------
    ValueError
        (from fit) more than MAX_ITEMS items, or no positive interaction.
    """

    def __init__(self, l2: float = 300.0):
        self.l2 = float(l2)

    def fit(self, interactions: pd.DataFrame) -> "EASE":
        positives = interactions
        if "weight" in positives.columns:
            positives = positives[positives["weight"].to_numpy(dtype=np.float64) > 0]
        if not len(positives):
            raise ValueError("EASE needs positive interactions")
        users = positives["user_id"].map(normalize_id).to_numpy(dtype=object)
        items = positives["item_id"].map(normalize_id).to_numpy(dtype=object)
        self.item_ids = np.asarray(sorted(set(items)), dtype=object)
        if len(self.item_ids) > MAX_ITEMS:
            raise ValueError(f"EASE is dense: at most {MAX_ITEMS} items, got {len(self.item_ids)}")
        user_ids = sorted(set(users))
        self._user_row = {u: n for n, u in enumerate(user_ids)}
        item_col = {i: n for n, i in enumerate(self.item_ids)}
        x = sp.csr_matrix((np.ones(len(users)), ([self._user_row[u] for u in users], [item_col[i] for i in items])),
                          shape=(len(user_ids), len(self.item_ids)))
        x.data[:] = 1.0  # repeats count once
        self._x = x
        g = (x.T @ x).toarray()
        self.popularity = np.diag(g).copy()
        g[np.diag_indices_from(g)] += self.l2
        p = np.linalg.inv(g)
        self.weights = -p / np.diag(p)  # column j divided by P_jj
        np.fill_diagonal(self.weights, 0.0)
        return self

    # the two methods recommender.evaluation.evaluate calls

    def prepare_items(self, item_features) -> None:
        """EASE has no item features: new items cannot be scored (evaluate then counts them unscorable)."""
        return None

    def predict_online(self, user_id, item_ids: Iterable | None = None, user_features=None, item_features=None,
                       **_) -> pd.Series:
        """Scores of every training item for a user: x_u B for a user with training interactions, item
        popularity (training users per item) for anyone else (strategy "popular")."""
        row = self._user_row.get(normalize_id(user_id))
        if row is None:
            scores, strategy = self.popularity.astype(np.float64), "popular"
        else:
            scores, strategy = np.asarray(self._x[row] @ self.weights).ravel(), "ease"
        series = pd.Series(scores, index=pd.Index(self.item_ids, dtype=object), name="score")
        series.attrs.update(strategy=strategy)
        return series


def ease_reference(split: Split, validation: Split, *, k: int = 10, max_users: int = 1000,
                   grid: Iterable[float] = L2_GRID) -> dict:
    """EASE's warm precision@k on ``split``, lambda chosen on ``validation`` (a split of ``split.train``).

    Returns {"l2", "validation": {lambda: precision@k}, "precision@k", "popularity_precision@k", "users"};
    {} when a split has no warm scenario, no positive interaction, or more than MAX_ITEMS items.
    """
    warm, vwarm = split.scenarios.get("warm"), validation.scenarios.get("warm")
    if warm is None or vwarm is None:
        return {}
    name = f"precision@{k}"
    if max(warm.train["item_id"].nunique(), vwarm.train["item_id"].nunique()) > MAX_ITEMS:
        return {}
    scores = {}
    try:
        for l2 in grid:
            scores[l2] = evaluate(EASE(l2).fit(vwarm.train), vwarm, (k,), max_users=max_users)["model"][name]
        best = max(scores, key=lambda l2: (scores[l2], -l2))
        result = evaluate(EASE(best).fit(warm.train), warm, (k,), max_users=max_users)
    except ValueError:  # e.g. no positive interaction
        return {}
    return {"l2": best, "validation": {str(l2): round(v, 4) for l2, v in scores.items()},
            name: result["model"][name], f"popularity_{name}": result["popularity"][name], "users": result["users"]}
