"""The standard on-disk data format, and converters into it (synthetic demo world, MovieLens 100K).

A data directory holds three CSV files with a header row:

- ``interactions.csv``: ``user_id,item_id,weight,timestamp`` (weight and timestamp optional),
- ``user_features.csv``: ``user_id,feature,weight`` (long form, one row per feature),
- ``item_features.csv``: ``item_id,feature,weight``,

and, for generated data, ``holdout.csv`` (interactions kept back as ground truth, never loaded into
Redis) and ``truth.json`` (new users and items, user interests, item genres). Ids and feature names are
read as strings exactly as written (no "NA" -> NaN guessing); weights as float64.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .synthetic import World

INTERACTIONS = "interactions.csv"
USER_FEATURES = "user_features.csv"
ITEM_FEATURES = "item_features.csv"
HOLDOUT = "holdout.csv"
TRUTH = "truth.json"

INTERACTION_COLUMNS = ("user_id", "item_id", "weight", "timestamp")
MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
AGE_BANDS = ((18, "under-18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"))  # (upper bound, band)

Frames = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
PathLike = str | os.PathLike


def write_standard(data: World | Sequence[pd.DataFrame] | Mapping[str, pd.DataFrame],
                   out_dir: PathLike) -> dict[str, Path]:
    """Write a World, an (interactions, user_features, item_features) tuple or a dict of them; returns paths.

    A World also writes holdout.csv and truth.json; a dict may carry a "holdout" frame.

    Raises
    ------
    ValueError
        A frame lacks a required column.
    """
    truth = None
    if isinstance(data, World):
        frames = {"interactions": data.interactions, "user_features": data.user_features,
                  "item_features": data.item_features, "holdout": data.holdout}
        truth = {
            "new_users": list(data.new_users),
            "new_items": list(data.new_items),
            "user_interests": {u: list(g) for u, g in data.user_interests.items()},
            "item_genre": dict(data.item_genre),
        }
    elif isinstance(data, Mapping):
        frames = dict(data)
    else:
        interactions, user_features, item_features = data
        frames = {"interactions": interactions, "user_features": user_features, "item_features": item_features}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    layout = (("interactions", INTERACTIONS, "interactions"), ("user_features", USER_FEATURES, "user_id"),
              ("item_features", ITEM_FEATURES, "item_id"), ("holdout", HOLDOUT, "interactions"))
    for name, filename, kind in layout:
        frame = frames.get(name)
        if frame is None:
            continue
        if kind == "interactions":
            columns = [c for c in INTERACTION_COLUMNS if c in frame.columns]
            _require(frame, ("user_id", "item_id"), name)
        else:
            columns = [kind, "feature", "weight"] if "weight" in frame.columns else [kind, "feature"]
            _require(frame, (kind, "feature"), name)
        path = out / filename
        frame[columns].to_csv(path, index=False)
        written[name] = path
    if truth is not None:
        path = out / TRUTH
        path.write_text(json.dumps(truth, indent=1, sort_keys=True))
        written["truth"] = path
    return written


def read_standard(directory: PathLike) -> Frames:
    """Read (interactions, user_features, item_features) from a data directory.

    Raises
    ------
    FileNotFoundError
        One of the three files is missing.
    ValueError
        A required column is missing, or a weight or timestamp is empty or not a number.
    """
    base = Path(directory)
    return (read_interactions(base / INTERACTIONS), _read_features(base / USER_FEATURES, "user_id"),
            _read_features(base / ITEM_FEATURES, "item_id"))


def read_holdout(directory: PathLike) -> pd.DataFrame:
    """The held-back interactions (holdout.csv) of a generated data directory."""
    return read_interactions(Path(directory) / HOLDOUT)


def read_truth(directory: PathLike) -> dict:
    """truth.json of a generated data directory (new_users, new_items, user_interests, item_genre)."""
    return json.loads((Path(directory) / TRUTH).read_text())


def read_interactions(path: PathLike) -> pd.DataFrame:
    """An interactions CSV: ids as str, weight float64 (1.0 when the column is absent), timestamp numeric.

    Raises
    ------
    ValueError
        Missing id columns, or empty / non-numeric weights or timestamps.
    """
    frame = _read_csv(path, ("user_id", "item_id"), numeric=("weight", "timestamp"))
    if "weight" not in frame.columns:
        frame.insert(2, "weight", 1.0)
    return frame


def _read_features(path: PathLike, id_col: str) -> pd.DataFrame:
    """A long-form feature CSV (id, feature[, weight]); weight 1.0 when the column is absent."""
    frame = _read_csv(path, (id_col, "feature"), numeric=("weight",))
    if "weight" not in frame.columns:
        frame["weight"] = 1.0
    return frame[[id_col, "feature", "weight"]]


def _read_csv(path: PathLike, text: Sequence[str], numeric: Sequence[str]) -> pd.DataFrame:
    """Read a CSV with ``text`` columns as literal strings and ``numeric`` columns checked to be numbers."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    frame = pd.read_csv(path, dtype={c: str for c in (*text, "feature")}, keep_default_na=False,
                        na_values={c: [""] for c in numeric})
    _require(frame, text, path.name)
    for col in numeric:
        if col not in frame.columns:
            continue
        if not pd.api.types.is_numeric_dtype(frame[col].dtype):
            raise ValueError(f"{path.name}: column {col!r} must be numeric")
        if frame[col].isna().any():
            row = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
            raise ValueError(f"{path.name}: column {col!r} is empty at data row {row}")
    if "weight" in frame.columns:
        frame["weight"] = frame["weight"].astype(np.float64)
    return frame


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    """ValueError unless the frame has every column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}, has {list(frame.columns)}")


# ---------------------------------------------------------------------- MovieLens 100K


def age_band(age: int) -> str:
    """Age band of an age in years: under-18, 18-24, 25-34, 35-44, 45-54 or 55+."""
    for upper, band in AGE_BANDS:
        if age < upper:
            return band
    return "55+"


def read_movielens(src_dir: PathLike) -> Frames:
    """MovieLens 100K (u.data, u.user, u.item) as standard (interactions, user_features, item_features).

    Users get ``age:<band>``, ``gender:<M|F>`` and ``occupation:<x>``; items get ``genre:<name>`` per
    genre flag and ``decade:<1990s>`` from the release date (none when the date is missing). The weight
    of an interaction is its rating.

    Raises
    ------
    FileNotFoundError
        A file is missing.
    ValueError
        A line does not have the expected number of fields.
    """
    src = Path(src_dir)
    for name in ("u.data", "u.user", "u.item"):
        if not (src / name).exists():
            raise FileNotFoundError(f"{src / name} does not exist (expected the MovieLens 100K files)")

    data = pd.read_csv(src / "u.data", sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"],
                       dtype={"user_id": str, "item_id": str, "rating": np.float64, "timestamp": np.int64})
    interactions = pd.DataFrame({"user_id": data["user_id"].str.strip(), "item_id": data["item_id"].str.strip(),
                                 "weight": data["rating"], "timestamp": data["timestamp"]})

    user_rows: list[tuple[str, str, float]] = []
    for n, line in enumerate(_lines(src / "u.user", "latin-1"), 1):
        parts = line.split("|")
        if len(parts) != 5:
            raise ValueError(f"u.user line {n}: expected 5 fields id|age|gender|occupation|zip, got {len(parts)}")
        user, age, gender, occupation = (p.strip() for p in parts[:4])
        user_rows.append((user, f"age:{age_band(int(age))}", 1.0))
        user_rows.append((user, f"gender:{gender}", 1.0))
        user_rows.append((user, f"occupation:{occupation}", 1.0))

    item_rows: list[tuple[str, str, float]] = []
    n_genres = len(MOVIELENS_GENRES)
    for n, line in enumerate(_lines(src / "u.item", "latin-1"), 1):
        parts = line.split("|")
        if len(parts) < 5 + n_genres:
            raise ValueError(f"u.item line {n}: expected at least {5 + n_genres} fields, got {len(parts)}")
        item = parts[0].strip()
        # count from the end: the fields after the title have a fixed layout even if a title holds a '|'
        flags = parts[-n_genres:]
        release = parts[-(n_genres + 3)].strip()
        for genre, flag in zip(MOVIELENS_GENRES, flags):
            if flag.strip() == "1":
                item_rows.append((item, f"genre:{genre}", 1.0))
        year = re.search(r"(\d{4})$", release)
        if year:
            item_rows.append((item, f"decade:{int(year.group(1)) // 10 * 10}s", 1.0))

    user_features = pd.DataFrame(user_rows, columns=["user_id", "feature", "weight"])
    item_features = pd.DataFrame(item_rows, columns=["item_id", "feature", "weight"])
    return interactions, user_features, item_features


def convert_movielens(src_dir: PathLike, out_dir: PathLike) -> dict[str, Path]:
    """Convert MovieLens 100K in ``src_dir`` to the standard format in ``out_dir``; returns the paths."""
    return write_standard(read_movielens(src_dir), out_dir)


def _lines(path: Path, encoding: str) -> list[str]:
    """Non-empty lines of a text file, without line endings."""
    return [line for line in path.read_text(encoding=encoding).splitlines() if line.strip()]
