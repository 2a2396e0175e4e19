"""``reco-online-eval``: estimate models' click-through rate on the logged exploration slice (replay).

    reco-online-eval [--hours 24 | --since T [--until T]] [--k 10] [--version V ...] [--json FILE]

Reads the impressions and attributed clicks of the window from Redis (REDIS_URL, REDIS_PREFIX), the model
versions from MODEL_DIR or MODEL_STORE (default: every version serving now, one per A/B variant), and
prints, per version, the replay estimate of its CTR from the explored slots (unbiased: see
recommender.online_eval) with a 95% interval, next to the naive estimate (precision@k on logged clicks,
biased towards the model that chose what was shown) and the logged CTR of the served and explored slots.
Use it to judge a retrained model (publish it under a variant, or pass ``--version``) on data the serving
model did not choose. Exit status 1 when Redis or a model cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..errors import ArtifactError, StoreUnavailableError
from ..model.artifact_store import artifact_store_from_settings
from ..online import pointer_of
from ..online_eval import compare, exclusions, read_slots, top_k_lists
from ..serving import build_snapshot, load_checked
from ..settings import Settings
from ..store import RedisFeatureStore
from ..store.impressions import ImpressionLog
from ..store.jobs import current_version


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, read the log, rank each version's top-k for the logged users, print the table."""
    parser = argparse.ArgumentParser(prog="reco-online-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="window: the last N hours (default 24)")
    parser.add_argument("--since", type=float, default=None, help="window start, Unix seconds (overrides --hours)")
    parser.add_argument("--until", type=float, default=None, help="window end, Unix seconds (default: now)")
    parser.add_argument("--k", type=int, default=10, help="length of each model's list (default 10)")
    parser.add_argument("--version", action="append", default=None,
                        help="a model version to evaluate (repeatable; default: the serving ones)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.k < 1 or args.hours <= 0:
        parser.error("--k must be >= 1 and --hours > 0")
    until = time.time() if args.until is None else args.until
    since = until - args.hours * 3600 if args.since is None else args.since
    settings = Settings.from_env()
    store = RedisFeatureStore.from_url(settings.redis_url, prefix=settings.redis_prefix, socket_timeout=30.0,
                                       connect_timeout=2.0)
    log = ImpressionLog(store, settings.impressions_max, settings.impression_ttl)
    try:
        slots = read_slots(log, since, until)
        plain = [s for s in slots if s.context == "user" and s.user_id]
        users = sorted({s.user_id for s in plain})
        seen = {}
        for user in users:
            record = store.get_user(user)
            seen[user] = record.seen | record.negative
        excluded = exclusions(plain, seen)
        versions = args.version or _serving_versions(store, settings)
        if not versions:
            print("error: no model is published yet", file=sys.stderr)
            return 1
        artifacts = artifact_store_from_settings(settings)
        candidates = {}
        for version in versions:
            directory = artifacts.fetch(version)
            snap = build_snapshot(store, load_checked(directory.parent, version), version)
            features = {user: store.get_user(user).features for user in users}

            def rank(user, k, skip, snap=snap, features=features):
                ranking = snap.model.rank(user, k, user_features=features.get(user), item_features=snap.items,
                                          exclude=skip)
                return [item for item, _ in ranking.items]

            with tqdm(total=len(users), unit="users", desc=f"rank {version}") as bar:
                candidates[version] = top_k_lists(rank, users, args.k, excluded, bar.update)
    except (StoreUnavailableError, ArtifactError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = {"since": since, "until": until, **compare(slots, candidates, args.k)}
    print(render(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _serving_versions(store, settings: Settings) -> list[str]:
    """The version each A/B variant serves now (one without VARIANTS), without repeats."""
    versions = [current_version(store, pointer_of(v)) for v in settings.variant_list]
    return list(dict.fromkeys(v for v in versions if v))


def _pct(estimate: dict) -> str:
    if estimate["ctr"] is None:
        return "n/a"
    return f"{100 * estimate['ctr']:.2f}% [{100 * estimate['low']:.2f}, {100 * estimate['high']:.2f}]"


def render(report: dict) -> str:
    """The report as a text table."""
    logged = report["logged"]
    lines = [f"{report['answers']:,d} answers, {report['explored_slots']:,d} explored slots usable for replay "
             f"(k={report['k']})",
             f"logged CTR: served slots {_pct(logged['served'])} of {logged['served']['shown']:,d}; "
             f"explored slots {_pct(logged['explored'])} of {logged['explored']['shown']:,d}",
             "",
             f"{'model':<28} {'replay CTR [95%]':<26} {'matched':>8} {'naive p@k (biased)':>20} {'users':>7}"]
    for name, row in report["candidates"].items():
        naive = row["naive"]
        naive_text = "n/a" if naive["ctr"] is None else f"{naive['ctr']:.4f}"
        lines.append(f"{name:<28} {_pct(row['replay']):<26} {row['replay']['shown']:>8,d} {naive_text:>20} "
                     f"{row['users']:>7,d}")
    if report["explored_slots"] == 0:
        lines.append("\nno explored slots in the window: set EXPLORATION_RATE > 0 (e.g. 0.05) and wait for traffic")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
