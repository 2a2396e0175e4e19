"""Kept so the old command keeps working: this is the console script `reco-load` (recommender.cli.data)."""

from recommender.cli.data import load_main

if __name__ == "__main__":
    raise SystemExit(load_main())
