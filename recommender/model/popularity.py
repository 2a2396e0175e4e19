"""The popularity baseline: what a user nothing is known about is served (cases IV, VIII and XII).

Computed once at fit time from the training interactions and saved with the model. New items (no
interactions, so no popularity) are placed into the same scale through their feature-derived item bias:
an item whose bias is at the q-th quantile of the known items' biases gets the q-th quantile of
popularity (:meth:`Popularity.for_new_items`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class Popularity:
    """Item popularity over the known items, in the model's item order.

    Parameters
    ----------
    item_ids : array of str, shape (n_items,)
        The known items, in internal order.
    scores : array of float64, shape (n_items,)
        Interaction count plus a tie-breaker in [0, 0.99] from the mean weight (see :meth:`fit`).
    """

    def __init__(self, item_ids: np.ndarray, scores: np.ndarray):
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(item_ids),):
            raise ValueError(f"popularity has {scores.shape} scores for {len(item_ids)} items")
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.scores = scores
        self.scores.flags.writeable = False
        self._sorted = np.sort(scores)

    @classmethod
    def fit(cls, cols: np.ndarray, weights: np.ndarray, item_ids: np.ndarray) -> "Popularity":
        """Count positive interactions per item; ties broken by mean weight, scaled into [0, 0.99].

        ``cols`` (internal item indices) and ``weights`` are the positive training records only (weight
        > 0: a negative signal never counts as popularity); ``item_ids`` are the known items in internal
        order. An item without a positive record scores 0.
        """
        n = len(item_ids)
        count = np.bincount(cols, minlength=n).astype(np.float64)
        total = np.bincount(cols, weights=weights, minlength=n)
        has = count > 0
        mean = np.zeros(n)
        mean[has] = total[has] / count[has]
        tie = np.zeros(n)
        if has.any():
            low, span = mean[has].min(), mean[has].max() - mean[has].min()
            if span > 0:
                tie[has] = (mean[has] - low) / span * 0.99
        return cls(item_ids, count + tie)

    @property
    def series(self) -> pd.Series:
        """The scores as a Series indexed by item id (named "popularity")."""
        return pd.Series(self.scores, index=pd.Index(self.item_ids, dtype=object), name="popularity")

    def for_new_items(self, biases: np.ndarray, known_biases_sorted: np.ndarray) -> np.ndarray:
        """Popularity-scale scores of new items: the popularity at each item bias's quantile among the
        known items' biases (``known_biases_sorted``, ascending). Shape of ``biases``, float64."""
        if len(biases) == 0 or len(known_biases_sorted) == 0:
            return np.zeros(len(biases))
        frac = np.searchsorted(known_biases_sorted, biases, side="right") / len(known_biases_sorted)
        return np.quantile(self._sorted, np.minimum(frac, 1.0))
