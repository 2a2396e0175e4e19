"""Load a standard data directory into Redis: features, catalogue, seen sets and the interaction log.

    python scripts/load_data.py DIR [--redis-url URL] [--prefix reco:] [--batch 5000]

The URL defaults to $REDIS_URL, else redis://127.0.0.1:6379/0. Feature sets of the users and items in
the files are replaced; interactions are appended (loading the same directory twice appends twice).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from recommender.datasets import read_standard  # noqa: E402
from recommender.errors import StoreUnavailableError  # noqa: E402
from recommender.store import RedisFeatureStore  # noqa: E402

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, read the files, bulk-load them and print rows and rows/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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


if __name__ == "__main__":
    sys.exit(main())
