"""Write a synthetic demo data set (recommender.synthetic) in the standard format.

    python scripts/make_demo_data.py OUT_DIR [--users 3000] [--items 2000] [--seed 42]

Writes interactions.csv, user_features.csv and item_features.csv (load these into Redis with
scripts/load_data.py), plus holdout.csv and truth.json: the ground truth of the held-back new users
and items, for evaluation only.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402

from recommender.datasets import write_standard  # noqa: E402
from recommender.synthetic import make_world  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate the world and write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write (created if missing)")
    parser.add_argument("--users", type=int, default=3000, help="number of users (default 3000)")
    parser.add_argument("--items", type=int, default=2000, help="number of items (default 2000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.items < 2:
        parser.error("--users must be >= 1 and --items >= 2")
    world = make_world(args.users, args.items, seed=args.seed)
    paths = write_standard(world, args.out_dir)
    print(f"{len(world.interactions)} interactions, {len(world.user_features)} user feature rows, "
          f"{len(world.item_features)} item feature rows, {len(world.holdout)} held-back interactions "
          f"({len(world.new_users)} new users, {len(world.new_items)} new items)")
    for name, path in paths.items():
        print(f"  {name:14s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
