"""Convert MovieLens 100K (u.data, u.user, u.item) into the standard data format.

    python scripts/load_movielens.py SRC_DIR OUT_DIR

SRC_DIR is the unpacked ml-100k directory. Users get age:<band>, gender:<M|F> and occupation:<x>
features; items get genre:<name> and decade:<1990s>; an interaction's weight is its rating. Load the
result into Redis with scripts/load_data.py OUT_DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402

from recommender.datasets import read_movielens, write_standard  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, convert and report what was written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src_dir", type=Path, help="directory holding u.data, u.user and u.item")
    parser.add_argument("out_dir", type=Path, help="directory to write (created if missing)")
    args = parser.parse_args(argv)
    try:
        interactions, user_features, item_features = read_movielens(args.src_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = write_standard((interactions, user_features, item_features), args.out_dir)
    print(f"{len(interactions)} ratings of {interactions['user_id'].nunique()} users on "
          f"{interactions['item_id'].nunique()} items; {len(user_features)} user and "
          f"{len(item_features)} item feature rows")
    for name, path in paths.items():
        print(f"  {name:14s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
