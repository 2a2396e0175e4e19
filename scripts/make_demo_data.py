"""Kept so the old command keeps working: this is the console script `reco-demo-data` (recommender.cli.data)."""

from recommender.cli.data import demo_data_main

if __name__ == "__main__":
    raise SystemExit(demo_data_main())
