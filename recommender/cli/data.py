"""Command-line tools for data: the demo world, the MovieLens converter, and loading a data directory into Redis.

    reco-demo-data OUT_DIR [--users 3000] [--items 2000] [--seed 42]
    reco-movielens SRC_DIR OUT_DIR
    reco-load DIR [--redis-url URL] [--prefix reco:] [--batch 5000]

``reco-demo-data`` writes the synthetic demo world (recommender.synthetic) in the standard format:
interactions.csv, user_features.csv and item_features.csv, plus holdout.csv and truth.json (the ground
truth of the held-back new users and items, for evaluation only). ``reco-movielens`` converts MovieLens
100K (u.data, u.user, u.item): users get age:<band>, gender:<M|F> and occupation:<x> features, items
genre:<name> and decade:<1990s>, and an interaction's weight is its rating. ``reco-load`` loads a
standard directory into Redis: feature sets of the users and items in the files are replaced;
interactions are appended (loading the same directory twice appends twice). The URL defaults to
$REDIS_URL, else redis://127.0.0.1:6379/0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..datasets import read_movielens, read_standard, write_standard
from ..errors import StoreUnavailableError
from ..store import RedisFeatureStore
from ..store.migrate import migrate_legacy
from ..synthetic import make_world

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def demo_data_main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate the world and write it."""
    parser = argparse.ArgumentParser(description="Write the synthetic demo world in the standard data format.")
    parser.add_argument("out_dir", type=Path, help="directory to write (created if missing)")
    parser.add_argument("--users", type=int, default=3000, help="number of users (default 3000)")
    parser.add_argument("--items", type=int, default=2000, help="number of items (default 2000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.items < 2:
        parser.error("--users must be >= 1 and --items >= 2")
    world = make_world(args.users, args.items, seed=args.seed)
    _write(world, args.out_dir,
           f"{len(world.interactions)} interactions, {len(world.user_features)} user feature rows, "
           f"{len(world.item_features)} item feature rows, {len(world.holdout)} held-back interactions "
           f"({len(world.new_users)} new users, {len(world.new_items)} new items)")
    return 0



def movielens_main(argv: list[str] | None = None) -> int:
    """Parse arguments, convert and report what was written."""
    parser = argparse.ArgumentParser(description="Convert MovieLens 100K into the standard data format.")
    parser.add_argument("src_dir", type=Path, help="directory holding u.data, u.user and u.item")
    parser.add_argument("out_dir", type=Path, help="directory to write (created if missing)")
    args = parser.parse_args(argv)
    try:
        interactions, user_features, item_features = read_movielens(args.src_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _write((interactions, user_features, item_features), args.out_dir,
           f"{len(interactions)} ratings of {interactions['user_id'].nunique()} users on "
           f"{interactions['item_id'].nunique()} items; {len(user_features)} user and "
           f"{len(item_features)} item feature rows")
    return 0


def _write(data, out_dir: Path, summary: str) -> None:
    """Write the standard files and say what was written where."""
    paths = write_standard(data, out_dir)
    print(summary)
    for name, path in paths.items():
        print(f"  {name:14s} {path}")



def load_main(argv: list[str] | None = None) -> int:
    """Parse arguments, read the files, bulk-load them and print rows and rows/s."""
    parser = argparse.ArgumentParser(description="Load a standard data directory into Redis.")
    parser.add_argument("directory", type=Path, help="directory with interactions.csv, user_features.csv, "
                                                      "item_features.csv")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_URL),
                        help="Redis URL (default: $REDIS_URL, else %(default)s)")
    parser.add_argument("--prefix", default=os.environ.get("REDIS_PREFIX", "reco:"),
                        help="key prefix (default: REDIS_PREFIX or %(default)s)")
    parser.add_argument("--batch", type=int, default=5000, help="entities or rows per pipeline (default 5000)")
    parser.add_argument("--max-interactions", type=int, default=int(os.environ.get("MAX_INTERACTIONS", "0")),
                        help="keep about this many newest interactions in the log (default: MAX_INTERACTIONS or "
                             "0 = all)")
    args = parser.parse_args(argv)

    try:
        interactions, user_features, item_features = read_standard(args.directory)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # bulk loads run long pipelines: a generous socket timeout, so a slow batch is not retried twice
    store = RedisFeatureStore.from_url(args.redis_url, args.prefix, socket_timeout=30.0, connect_timeout=2.0,
                                       max_interactions=args.max_interactions)
    print(f"loading {args.directory} into {args.redis_url} (prefix {args.prefix!r})")
    total_rows, total_time = 0, 0.0
    try:
        migrate_legacy(store)  # a store of version 0.6 is moved to the tagged layout first (a no-op otherwise)
        for name, load, frame in (("user features", store.bulk_load_user_features, user_features),
                                  ("item features", store.bulk_load_item_features, item_features),
                                  ("interactions", store.bulk_load_interactions, interactions)):
            start = time.perf_counter()
            rows = load(frame, batch=args.batch, progress=True)
            elapsed = time.perf_counter() - start
            total_rows += rows
            total_time += elapsed
            print(f"  {name:14s} {rows:>10,d} rows in {elapsed:6.2f} s = {rows / max(elapsed, 1e-9):>10,.0f} rows/s")
        counts = store.counts()
    except StoreUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: invalid data, nothing of that file was written: {exc}", file=sys.stderr)
        return 2
    print(f"  {'total':14s} {total_rows:>10,d} rows in {total_time:6.2f} s = "
          f"{total_rows / max(total_time, 1e-9):>10,.0f} rows/s")
    print(f"store now holds {counts['users_with_features']:,d} users with features, {counts['items']:,d} "
          f"catalogue items, {counts['interactions']:,d} interactions")
    return 0


def migrate_main(argv: list[str] | None = None) -> int:
    """reco-migrate: move a store written by version 0.6 (untagged keys) to the tagged layout, in place."""
    parser = argparse.ArgumentParser(description="Move a store of the 0.6 key layout to the tagged layout "
                                                 "(see recommender/store/migrate.py); repeatable.")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_URL),
                        help="Redis URL (default: $REDIS_URL, else %(default)s)")
    parser.add_argument("--prefix", default=os.environ.get("REDIS_PREFIX", "reco:"),
                        help="key prefix (default: REDIS_PREFIX or %(default)s)")
    parser.add_argument("--scan", action="store_true", help="scan for old per-entity keys even when no "
                                                            "store-wide key of the old layout is left")
    args = parser.parse_args(argv)
    store = RedisFeatureStore.from_url(args.redis_url, args.prefix, socket_timeout=30.0, connect_timeout=2.0)
    try:
        counts = migrate_legacy(store, force_scan=args.scan)
    except StoreUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("moved: " + ", ".join(f"{k} {v:,d}" for k, v in counts.items()) if any(counts.values())
          else "nothing to migrate: the store has the tagged layout")
    return 0
