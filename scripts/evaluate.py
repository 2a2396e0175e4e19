"""Kept so the old command keeps working: this is the console script `reco-evaluate` (recommender.cli.evaluate)."""

from recommender.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
