"""Kept so the old command keeps working: this is the console script `reco-movielens` (recommender.cli.data)."""

from recommender.cli.data import movielens_main

if __name__ == "__main__":
    raise SystemExit(movielens_main())
