"""The standard data format (write/read round trip) and the MovieLens 100K converter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recommender.datasets import (age_band, convert_movielens, read_holdout, read_movielens, read_standard,
                                  read_truth, write_standard)
from recommender.synthetic import make_world
from recommender.cli import data as data_cli

ROOT = Path(__file__).resolve().parents[1]


def as_plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Object-typed text columns and a fresh index, so frames from different sources compare by value."""
    out = frame.reset_index(drop=True).copy()
    for col in out.columns:
        if col in ("user_id", "item_id", "feature"):
            out[col] = out[col].astype(object)
    return out


def test_make_demo_data_round_trip(tmp_path):
    out = tmp_path / "demo"
    assert data_cli.demo_data_main([str(out), "--users", "200", "--items", "120", "--seed", "3"]) == 0
    world = make_world(200, 120, seed=3)
    interactions, user_features, item_features = read_standard(out)
    pd.testing.assert_frame_equal(as_plain(interactions), as_plain(world.interactions))
    pd.testing.assert_frame_equal(as_plain(user_features), as_plain(world.user_features))
    pd.testing.assert_frame_equal(as_plain(item_features), as_plain(world.item_features))
    pd.testing.assert_frame_equal(as_plain(read_holdout(out)), as_plain(world.holdout))
    truth = read_truth(out)
    assert truth["new_users"] == world.new_users and truth["new_items"] == world.new_items
    assert truth["user_interests"] == {u: list(g) for u, g in world.user_interests.items()}
    assert truth["item_genre"] == world.item_genre
    # the held-back users' interactions are only in holdout.csv
    assert not set(interactions["user_id"]) & set(world.new_users)
    assert set(read_holdout(out)["user_id"]) & set(world.new_users)


@pytest.mark.parametrize("how", [[sys.executable, "scripts/make_demo_data.py"],
                                 [str(Path(sys.executable).parent / "reco-demo-data")]],
                         ids=["old script path", "console script"])
def test_make_demo_data_runs_as_a_script(tmp_path, how):
    result = subprocess.run([*how, str(tmp_path / "d"), "--users", "50", "--items", "40"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "d").iterdir()} == {
        "interactions.csv", "user_features.csv", "item_features.csv", "holdout.csv", "truth.json"}


def test_ids_and_weights_survive_exactly(tmp_path):
    # ids that pandas would turn into NaN or numbers by default must stay the strings they are
    interactions = pd.DataFrame({"user_id": ["NA", "007", "null"], "item_id": ["1.0", "", "i:1"],
                                 "weight": [0.1, 1 / 3, 2.0], "timestamp": [1, 2, 3]})
    interactions.loc[1, "item_id"] = "None"
    users = pd.DataFrame({"user_id": ["NA"], "feature": ["age:25-34"], "weight": [1e-300]})
    items = pd.DataFrame({"item_id": ["i:1"], "feature": ["tag:a,b"], "weight": [-2.5]})
    write_standard((interactions, users, items), tmp_path)
    got = read_standard(tmp_path)
    pd.testing.assert_frame_equal(as_plain(got[0]), as_plain(interactions))
    pd.testing.assert_frame_equal(as_plain(got[1]), as_plain(users))
    pd.testing.assert_frame_equal(as_plain(got[2]), as_plain(items))


def test_read_standard_rejects_empty_weights_and_missing_files(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id,weight\nu1,i1,\n")
    (tmp_path / "user_features.csv").write_text("user_id,feature\nu1,a\n")
    (tmp_path / "item_features.csv").write_text("item_id,feature,weight\ni1,g,1\n")
    with pytest.raises(ValueError, match="weight"):
        read_standard(tmp_path)
    (tmp_path / "interactions.csv").write_text("user_id,item_id\nu1,i1\n")
    interactions, users, _ = read_standard(tmp_path)
    assert interactions["weight"].tolist() == [1.0] and users["weight"].tolist() == [1.0]
    (tmp_path / "item_features.csv").unlink()
    with pytest.raises(FileNotFoundError):
        read_standard(tmp_path)


# ---------------------------------------------------------------------- MovieLens 100K

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n196\t1\t5\t881250950\n"
U_USER = "196|49|M|writer|55105\n186|39|F|executive|00000\n22|17|M|student|12345\n"
#        id  | title              | release     | video | url  | 19 genre flags
U_ITEM = ("1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
          "242|Café Society (1939)|01-Jan-1939||http://y|0|0|0|0|0|0|0|0|1|0|0|0|0|0|1|0|0|0|0\n"
          "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
          "302|L.A. Confidential (1997)|01-Jan-1997||http://z|0|0|0|0|0|0|1|0|0|0|1|0|0|1|0|0|1|0|0\n")


@pytest.fixture
def movielens(tmp_path) -> Path:
    """A few lines of each MovieLens 100K file; u.item in Latin-1 as the real file is."""
    src = tmp_path / "ml-100k"
    src.mkdir()
    (src / "u.data").write_text(U_DATA)
    (src / "u.user").write_text(U_USER)
    (src / "u.item").write_bytes(U_ITEM.encode("latin-1"))  # "é" is one byte, invalid as UTF-8
    return src


def test_movielens_converter_gives_exact_features_and_weights(movielens):
    interactions, users, items = read_movielens(movielens)
    assert interactions.values.tolist() == [["196", "242", 3.0, 881250949], ["186", "302", 3.0, 891717742],
                                            ["22", "377", 1.0, 878887116], ["196", "1", 5.0, 881250950]]
    assert interactions["weight"].dtype == "float64"
    assert sorted(map(tuple, users.values.tolist())) == sorted([
        ("196", "age:45-54", 1.0), ("196", "gender:M", 1.0), ("196", "occupation:writer", 1.0),
        ("186", "age:35-44", 1.0), ("186", "gender:F", 1.0), ("186", "occupation:executive", 1.0),
        ("22", "age:under-18", 1.0), ("22", "gender:M", 1.0), ("22", "occupation:student", 1.0),
    ])
    assert sorted(map(tuple, items.values.tolist())) == sorted([
        ("1", "genre:Animation", 1.0), ("1", "genre:Children's", 1.0), ("1", "genre:Comedy", 1.0),
        ("1", "decade:1990s", 1.0),
        ("242", "genre:Drama", 1.0), ("242", "genre:Romance", 1.0), ("242", "decade:1930s", 1.0),
        ("267", "genre:unknown", 1.0),  # no release date: no decade feature
        ("302", "genre:Crime", 1.0), ("302", "genre:Film-Noir", 1.0), ("302", "genre:Mystery", 1.0),
        ("302", "genre:Thriller", 1.0), ("302", "decade:1990s", 1.0),
    ])


def test_movielens_script_writes_the_standard_format(movielens, tmp_path):
    out = tmp_path / "std"
    result = subprocess.run([str(Path(sys.executable).parent / "reco-movielens"), str(movielens), str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = read_movielens(movielens)
    for got, want in zip(read_standard(out), expected):
        pd.testing.assert_frame_equal(as_plain(got), as_plain(want))
    assert convert_movielens(movielens, tmp_path / "again")["interactions"].exists()


def test_movielens_converter_reports_missing_and_malformed_files(movielens):
    (movielens / "u.user").write_text("196|49|M\n")
    with pytest.raises(ValueError, match="u.user line 1"):
        read_movielens(movielens)
    (movielens / "u.item").unlink()
    with pytest.raises(FileNotFoundError, match="u.item"):
        read_movielens(movielens)


@pytest.mark.parametrize("age,band", [(7, "under-18"), (17, "under-18"), (18, "18-24"), (24, "18-24"),
                                      (25, "25-34"), (34, "25-34"), (35, "35-44"), (45, "45-54"),
                                      (54, "45-54"), (55, "55+"), (73, "55+")])
def test_age_bands(age, band):
    assert age_band(age) == band


def test_truth_json_is_plain_json(tmp_path):
    write_standard(make_world(30, 20, seed=1), tmp_path)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert set(truth) == {"new_users", "new_items", "user_interests", "item_genre"}
