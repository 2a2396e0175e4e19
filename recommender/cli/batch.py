"""``reco-batch``: top-N recommendations for every known user (or a list) to a file and optionally into Redis.

    reco-batch --out recs.csv [--n 10] [--users u1,u2 | --users-file FILE] [--redis] [--version V]

Reads the published model version (or ``--version``) from MODEL_DIR or MODEL_STORE and the catalogue, seen and negative
items from Redis (REDIS_URL, REDIS_PREFIX), so the answers are those of GET /recommend for users without
interactions since training. Writes CSV (user_id,rank,item_id,score) or Parquet (``.parquet``, needs
pyarrow), block by block: memory does not grow with the number of users. ``--redis`` also writes each
user's list to ``<prefix>user:{id}:batch`` (JSON with the model version) for precomputed serving.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..batch import batch_recommend, to_redis
from ..errors import ArtifactError, StoreUnavailableError
from ..model.artifact_store import artifact_store_from_settings
from ..serving import build_snapshot, load_checked
from ..settings import Settings
from ..store import RedisFeatureStore
from ..store.jobs import current_version


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the model and the catalogue, write the answers, print users/s."""
    parser = argparse.ArgumentParser(prog="reco-batch", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output file: .csv or .parquet")
    parser.add_argument("--n", type=int, default=10, help="items per user (default 10)")
    parser.add_argument("--users", default=None, help="comma-separated user ids (default: every known user)")
    parser.add_argument("--users-file", type=Path, default=None, help="a file with one user id per line")
    parser.add_argument("--redis", action="store_true", help="also write each list to <prefix>user:{id}:batch")
    parser.add_argument("--ttl", type=int, default=None, help="seconds the Redis lists live (default: no expiry)")
    parser.add_argument("--version", default=None, help="model version (default: the published one)")
    parser.add_argument("--keep-seen", action="store_true", help="do not exclude seen items (negatives still are)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    if args.out.suffix not in (".csv", ".parquet"):
        parser.error("--out must end in .csv or .parquet")
    settings = Settings.from_env()
    store = RedisFeatureStore.from_url(settings.redis_url, prefix=settings.redis_prefix, socket_timeout=30.0,
                                       connect_timeout=2.0)
    users = None
    if args.users:
        users = [u.strip() for u in args.users.split(",") if u.strip()]
    elif args.users_file:
        users = [line.strip() for line in args.users_file.read_text().splitlines() if line.strip()]
    try:
        version = args.version or current_version(store)
        if not version:
            print("error: no model is published yet", file=sys.stderr)
            return 1
        directory = artifact_store_from_settings(settings).fetch(version)  # downloaded first from an object store
        snap = build_snapshot(store, load_checked(directory.parent, version), version)
    except (StoreUnavailableError, ArtifactError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = snap.model.n_users if users is None else len(users)
    skipped: list[str] = []
    started, written = time.perf_counter(), 0
    writer = _Writer(args.out)
    try:
        with tqdm(total=total, unit="users", unit_scale=True, desc="batch") as bar:
            for block in batch_recommend(snap, args.n, users, store=store, exclude_seen=not args.keep_seen,
                                         skipped=skipped):
                writer.write(block)
                if args.redis:
                    to_redis(store, version, block, args.ttl)
                written += len(block.users)
                bar.update(len(block.users))
    finally:
        writer.close()
    seconds = time.perf_counter() - started
    print(f"model {version}: {written:,d} users in {seconds:.1f} s ({written / max(seconds, 1e-9):,.0f} users/s) "
          f"-> {args.out}{' and Redis' if args.redis else ''}")
    if skipped:
        print(f"skipped {len(skipped)} user(s) the model does not know, e.g. {skipped[:5]}", file=sys.stderr)
    return 0


class _Writer:
    """CSV or Parquet output, block by block."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._parquet = None
        if path.suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise SystemExit("error: Parquet output needs pyarrow (pip install pyarrow); or write .csv")
        else:
            self._fh = open(path, "w", newline="")
            self._csv = csv.writer(self._fh)
            self._csv.writerow(["user_id", "rank", "item_id", "score"])

    def write(self, block) -> None:
        rows = [(user, rank, item, score) for user, items in zip(block.users, block.items)
                for rank, (item, score) in enumerate(items, start=1)]
        if self.path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({name: [r[i] for r in rows] for i, name in enumerate(("user_id", "rank", "item_id",
                                                                                    "score"))})
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
        else:
            self._csv.writerows(rows)

    def close(self) -> None:
        if self.path.suffix == ".parquet":
            if self._parquet is not None:
                self._parquet.close()
        else:
            self._fh.close()


if __name__ == "__main__":
    sys.exit(main())
