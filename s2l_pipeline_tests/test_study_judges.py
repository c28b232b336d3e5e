"""A study's two judges and its data draws, through `s2l study --spec` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import readme_spec, run_study


@pytest.mark.slow
def test_s2l_study_chooses_on_validation_and_reports_the_held_out_test(tmp_path: Path) -> None:
    """The README's two-judge spec as a user runs it: the grid's cells are judged on
    validation only, the best point is kept, and every reported number comes from a test split
    carved apart from the pool and the validation split, each cell's record saying so."""
    import polars as pl

    spec = readme_spec("judged.yaml")
    done, out = run_study(tmp_path, spec)
    assert done.returncode == 0, done.stderr[-3000:]
    tuned = out["tuning"]
    assert out["judge"] == "test" and tuned["judge"] == "validation"
    points = {p["learning_rate"]: p["validation_score"] for p in tuned["points"]}
    assert set(points) == {0.0005, 0.003}
    best = max(tuned["points"], key=lambda p: (p["validation_score"], -p["validation_nll"]))
    assert tuned["chosen"] == {"learning_rate": best["learning_rate"]}
    assert "chosen on validation: learning_rate" in done.stderr
    assert out["cells_run"] == 4  # random x 2 seeds, full x 2; the 2 tuning cells before
    art = tmp_path / "art"
    records = [json.loads(p.read_text()) for p in art.glob("study_cells/*/*/*.json")]
    by_judge = {j: [r for r in records if r["judge"] == j] for j in ("validation", "test")}
    assert len(by_judge["validation"]) == 2 and len(by_judge["test"]) == 4
    assert {r["key"] for r in by_judge["validation"]} == {"random-0.3-0"}
    [split_dir] = (art / "study_split").iterdir()
    test = pl.read_parquet(split_dir / "test.parquet")
    val = pl.read_parquet(split_dir / "validation.parquet")
    pool = pl.read_parquet(split_dir / "train.parquet")
    assert test.height > 0 and set(test["eval_set"].unique()) == {
        f"test:{s}" for s in pool["source"].unique()
    }  # one test set per source
    ids = [set(t["example_id"]) for t in (test, val, pool)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    for r in by_judge["test"]:  # each reported cell read the test split, item by item
        assert len(r["correct"]) == test.height
        assert r["off_mode"] and set(r["off_mode"]) <= set(test["eval_set"])
    for r in by_judge["validation"]:
        assert len(r["correct"]) == val.height
    report = Path(out["report"]).read_text()
    assert f"held-out test split of {test.height} rows" in report
    assert "chosen on the validation split" in report
    body = json.loads(Path(out["report_json"]).read_text())
    assert body["judge"] == "test" and all(c["judge"] == "test" for c in body["cells"])
    assert body["tuning"]["chosen"] == tuned["chosen"]

    # --plan names the study and the recipe each record is filed under, and runs nothing.
    planned, plan = run_study(tmp_path, spec, "--plan")
    assert planned.returncode == 0 and "started" not in planned.stderr, planned.stderr[-2000:]
    assert plan["study_id"] == split_dir.name and plan["judge"] == "test"
    by_rate = {r["settings"]["learning_rate"]: r for r in plan["recipes"]}
    assert {r["recipe"] for r in by_judge["validation"]} == {
        r["validation"] for r in plan["recipes"]
    }
    chosen = by_rate[tuned["chosen"]["learning_rate"]]["test"]
    assert {r["recipe"] for r in by_judge["test"]} == {chosen}

    # Run again: nothing trains, the same choice is made from the kept records.
    again, out2 = run_study(tmp_path, spec)
    assert again.returncode == 0, again.stderr[-3000:]
    assert out2["cells_run"] == 0 and out2["tuning"]["chosen"] == tuned["chosen"]
    assert "0 of 1 cells to run" in again.stderr


@pytest.mark.slow
def test_s2l_study_over_data_draws_makes_the_draw_the_unit(tmp_path: Path) -> None:
    """`draws: 2` on the embedded generator: each draw its own pool and split (its own study),
    seeds nested in draws, and one report whose intervals are made over the draws."""
    spec = {"arms": {"stratified_random": {}, "random": {}}, "budgets": [0.3], "seeds": 2,
            "full_seeds": 0, "draws": 2, "comparisons": [["stratified_random", "random"]],
            "target": {"epochs": 1.0}}  # fmt: skip
    done, out = run_study(tmp_path, spec)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(out["draws"]) == 2 and len(set(out["study_ids"])) == 2  # two splits
    assert out["cells"] == out["cells_run"] == 8
    pools = [json.loads(s["report_json"] and Path(s["report_json"]).read_text())
             for s in out["draws"]]  # fmt: skip
    ids = [{c["rows_hash"] for c in p["cells"]} for p in pools]
    assert not ids[0] & ids[1]  # other pools, other rows
    body = json.loads(Path(out["report_json"]).read_text())
    assert sorted({c["draw"] for c in body["cells"]}) == [0, 1]
    [reg] = body["registered"]
    assert reg["seeds"] == 2  # two draws are the replicates, not four seeds
    by = {(c["draw"], c["seed"], c["method"]): c["score"] for c in body["cells"]}
    per_draw = [
        sum(by[(d, s, "stratified_random")] - by[(d, s, "random")] for s in (0, 1)) / 2
        for d in (0, 1)
    ]
    assert reg["difference"] == pytest.approx(100 * sum(per_draw) / 2)
    report = Path(out["report"]).read_text()
    assert "Unit of replication: the data draw (2 draws" in report
