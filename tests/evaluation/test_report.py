"""reco-evaluate end to end on a small world in the standard format: the report, its plots, the shipped section."""

from __future__ import annotations

import re

from recommender.cli.evaluate import main
from recommender.datasets import write_standard
from recommender.synthetic import make_world


def test_reco_evaluate_writes_the_report_with_the_service_as_it_ships(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_BUDGET_SECONDS", "20")  # the shipped section's selection: keep it short here
    world = make_world(300, 200, seed=3)
    write_standard(world, tmp_path / "data")
    out = tmp_path / "out"
    assert main(["--data", str(tmp_path / "data"), "--out", str(out), "--quick", "--epochs", "5",
                 "--max-users", "100"]) == 0
    text = (out / "EVALUATION.md").read_text()
    for png in ("evaluation.png", "evaluation_epochs.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(current default)" in text and "warp · pure CF (no features)" in text
    section = text[text.index("## The service as it ships"):text.index("## MovieLens 100K")]
    chosen = re.search(r"row_norm \*\*(\w+)\*\*, \*\*(\d+) epochs\*\*", section)
    assert chosen and chosen.group(1) in ("features", "together", "none") and int(chosen.group(2)) >= 1
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in section.splitlines()
            if line.startswith("| ") and "---" not in line and not line.startswith("| population")}
    assert {"warm users", "feature-only users (new, features only)", "new items (among themselves)"} <= set(rows)
    for label, cells in rows.items():  # measured numbers, not placeholders
        assert 0.0 <= float(cells[2]) <= 1.0 and 0.0 <= float(cells[3]) <= 1.0, (label, cells)
    ease = re.search(r"reaches warm precision@10 \*\*([\d.]+)\*\* on the same (\d+) test users; the service as "
                     r"shipped \*\*([\d.]+)\*\*", text)
    assert ease and 0.0 < float(ease.group(1)) <= 1.0 and int(ease.group(2)) > 0  # the EASE reference row
