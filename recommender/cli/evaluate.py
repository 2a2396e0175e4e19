"""``reco-evaluate``: compare configurations on the demo world or your data; writes docs/EVALUATION.md.

See recommender/evaluation/report.py for what is measured and how defaults are decided.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluation.report import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare model configurations against popularity; write a report.")
    parser.add_argument("--data", type=Path, default=None, help="standard-format data directory (default: "
                        "the synthetic demo world)")
    parser.add_argument("--out", type=Path, default=Path("var/reports"),
                        help="output directory (default var/reports; pass docs to update the docs)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs for the configuration table (default 20)")
    parser.add_argument("--quick", action="store_true", help="smaller world, one seed, shorter learning curve")
    parser.add_argument("--seed", type=int, default=42, help="model random_state for the table (default 42)")
    parser.add_argument("--max-users", type=int, default=None, help="users evaluated per scenario "
                        "(default 1000, --quick 500)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    args.max_users = args.max_users or (500 if args.quick else 1000)
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data} is not a directory")
    run(args)
    return 0
