"""Offline evaluation: splits, ranking metrics (one implementation for the retrain gate and the reports), reports.

``splits`` builds training data and scenarios (warm users, cold users, cold items); ``metrics`` scores a
model and the popularity baseline on them; ``report`` compares configurations and writes
docs/EVALUATION.md with its plots (console script ``reco-evaluate``).
"""

from .metrics import (BASELINE_PROBE_USER, DEFAULT_KS, auc_score, evaluate, evaluate_split,
                      metric_names, user_metrics)
from .splits import (SCENARIOS, Scenario, Split, cold_item_split, cold_user_split, features_by_id, holdout_split,
                     temporal_split, world_split)

__all__ = ["BASELINE_PROBE_USER", "DEFAULT_KS", "SCENARIOS", "Scenario", "Split", "auc_score", "cold_item_split",
           "cold_user_split", "evaluate", "evaluate_split", "features_by_id", "holdout_split",
           "metric_names", "temporal_split", "user_metrics", "world_split"]
