"""A study as a spec file: what it names, how its mistakes are said, what its id holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from s2l_pipeline.core.study.report import StudyCell, build_report
from s2l_pipeline.core.study.sequential import SeedPolicy
from s2l_pipeline.core.study.spec import (
    Arm,
    SpecError,
    from_flags,
    load_spec,
    parse_spec,
)

SPEC = {
    "data": {"files": [{"path": "train.jsonl", "task": "math"}]},
    "target": {"epochs": 2.0},
    "arms": {
        "s2l": {"method": "s2l"},
        "s2l_paper": {"method": "s2l", "stratify_by": "source", "min_cluster_size": 3},
        "stratified_random": None,
        "random": {},
    },
    "budgets": [0.3, 0.1],
    "seeds": {"min": 5, "max": 30, "look_every": 5},
    "endpoint": "score_over_floor",
    "comparisons": [["s2l_paper", "stratified_random"], "s2l vs random"],
    "epsilon": 2,
}


def test_a_spec_names_arms_budgets_seeds_endpoint_and_comparisons(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    spec = load_spec(path)
    assert spec.arm_names == ["s2l", "s2l_paper", "stratified_random", "random"]
    paper = spec.arms[1]
    assert paper == Arm("s2l_paper", "s2l", {"min_cluster_size": 3, "stratify_by": "source"})
    assert spec.budgets == (0.1, 0.3)
    assert spec.seeds == SeedPolicy(5, 30, 5) and spec.max_seeds == 30
    assert spec.comparisons == (("s2l_paper", "stratified_random"), ("s2l", "random"))
    assert [c.name for c in spec.pairs()] == [
        "s2l_paper@0.1 - stratified_random@0.1",
        "s2l_paper@0.3 - stratified_random@0.3",
        "s2l@0.1 - random@0.1",
        "s2l@0.3 - random@0.3",
    ]
    # Only arms that are not a plain method of their name need config.
    assert spec.arm_config() == {
        "s2l_paper": {"method": "s2l", "options": {"min_cluster_size": 3, "stratify_by": "source"}}
    }
    # The spec travels as plain data (the report's run config) and comes back the same.
    again = parse_spec(json.loads(json.dumps(spec.to_dict())))
    assert again.spec_id == spec.spec_id and again.arms == spec.arms


def test_the_id_changes_with_what_decides_the_answer_only() -> None:
    base = parse_spec(SPEC)
    for change in (
        {"endpoint": "nll"},
        {"comparisons": [["s2l", "random"]]},
        {"arms": {**SPEC["arms"], "s2l_paper": {"method": "s2l", "min_cluster_size": 2}}},
        {"budgets": [0.1]},
        {"epsilon": 1},
        {"seeds": 5},
    ):
        assert parse_spec({**SPEC, **change}).spec_id != base.spec_id, change
    # The data's path or the target's recipe are not the question asked.
    same = parse_spec({**SPEC, "target": {"epochs": 3.0}, "data": {}})
    assert same.spec_id == base.spec_id


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"arm": 1}, "arm: unknown key; valid: data, target"),
        ({"arms": {"s2l": {"method": "s2lx"}}}, "arms: s2l: method: 's2lx' is not one of"),
        ({"arms": {"s2l": {"min_clusters": 3}}}, "arms: s2l: min_clusters: not a selector option"),
        ({"arms": {"S2L-x": {}}}, "arms: S2L-x: a name of lower-case"),
        ({"arms": {"full": {"method": "random"}}}, "arms: full: .* \\(not 'full'\\)"),
        ({"budgets": [0.1, 1.5]}, "budgets: fractions of the pool in \\(0, 1\\); not \\[1.5\\]"),
        ({"budgets": "0.1"}, "budgets: a list"),
        ({"seeds": {"min": 1, "max": 4, "look_every": 1}}, "seeds: seeds: min must be"),
        ({"seeds": {"minimum": 5}}, "seeds: unknown \\['minimum'\\]"),
        ({"endpoint": "accuracy"}, "endpoint: one of score, score_over_floor, nll"),
        ({"comparisons": [["s2l", "longest"]]}, "comparisons\\[0\\]: 'longest' is not an arm"),
        ({"comparisons": [["full", "s2l"]]}, "comparisons\\[0\\]: compare an arm"),
        ({"epsilon": "one"}, "epsilon: points"),
    ],
)
def test_each_mistake_names_the_file_and_the_field(tmp_path: Path, change, said) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **change}))
    with pytest.raises(SpecError, match=f"{path}: {said}"):
        load_spec(path)


def test_flags_stand_for_a_spec_with_random_and_every_default_comparison() -> None:
    spec = from_flags(["s2l", "longest"], [0.2], 3, 1.0)
    assert spec.arm_names == ["s2l", "longest", "random"]
    assert spec.comparisons == (
        ("s2l", "random"), ("longest", "random"), ("s2l", "full"), ("longest", "full"),
        ("random", "full"),
    )  # fmt: skip
    assert spec.arm_config() == {}


def test_registered_comparisons_get_holm_across_the_whole_report() -> None:
    """Two comparisons at two budgets: four p-values, adjusted together, never below the raw."""
    cells = []
    for seed in range(8):
        for budget in (0.1, 0.3):
            cells += [
                StudyCell("random", budget, seed, 0.30 + 0.01 * seed),
                StudyCell("s2l", budget, seed, 0.35 + 0.01 * seed + 0.002 * (seed % 2)),
                StudyCell("longest", budget, seed, 0.30 + 0.01 * seed + 0.001 * (-1) ** seed),
            ]
    r = build_report(cells, 1.0, [("s2l", "random"), ("longest", "random")])
    assert [c.name for c in r.registered] == [
        "s2l@0.1 vs random@0.1", "s2l@0.3 vs random@0.3",
        "longest@0.1 vs random@0.1", "longest@0.3 vs random@0.3",
    ]  # fmt: skip
    s2l = r.registered[0]
    assert s2l.p == pytest.approx(2 / 2**8) and s2l.p_holm == pytest.approx(4 * 2 / 2**8)
    assert all(c.p_holm >= c.p for c in r.registered)
    assert any("registered comparisons hold at 5% after Holm" in s for s in r.recommendation)


def _readme_spec(name: str = "study.yaml") -> dict:
    """The README's spec that opens with the comment '# <name>'."""
    import re

    from .conftest import PROJECT_ROOT

    text = (PROJECT_ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    [spec] = [yaml.safe_load(b) for b in blocks if b.startswith(f"# {name}\n")]
    return spec


def _interrupt_at_first_cell(tmp_path: Path, spec: dict):
    """`s2l study --spec` given Ctrl-C (SIGINT) once its first cell has started."""
    import signal
    import subprocess
    import time

    from .conftest import s2l_cmd, s2l_env

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    log = tmp_path / "interrupted.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*s2l_cmd(), "study", "--profile", "tiny", "--spec", str(path)], cwd=tmp_path,
            env={**s2l_env(tmp_path, profile=None), "S2L_ARTIFACT_ROOT": str(tmp_path / "art")},
            stdout=subprocess.DEVNULL, stderr=err, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while " started" not in log.read_text() and proc.poll() is None:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", log.read_text())


def _study(tmp_path: Path, spec: dict, *extra: str, machine: str | None = None):
    """`s2l study --spec` as a user runs it; ``machine``: a new Dagster instance and data
    folder under that name, the same artifact store (where the cells' records are)."""
    import subprocess

    from .conftest import s2l_cmd, s2l_env

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    cmd = [*s2l_cmd(), "study", "--profile", "tiny", "--spec", str(path), *extra]
    home = tmp_path / machine if machine else tmp_path
    home.mkdir(exist_ok=True)
    env = {**s2l_env(home, profile=None), "S2L_ARTIFACT_ROOT": str(tmp_path / "art")}
    done = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, timeout=600)
    out = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    return done, out


@pytest.mark.slow
def test_s2l_study_from_the_readmes_spec_registers_it_and_reuses_cells(tmp_path: Path) -> None:
    """The README's spec run as a user runs it: named arms with their own selector options,
    the registered comparisons with Holm in the report, the spec beside the report; a changed
    endpoint is a new spec, said to be exploratory, on the same cells; a changed arm is new
    cells of that arm only."""
    spec = _readme_spec()
    done, out = _study(tmp_path, spec)
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = parse_spec(spec)
    assert out["spec_id"] == parsed.spec_id and out["endpoint"] == "score"
    assert out["cells"] == out["cells_run"] == 8  # 3 arms x 2 seeds, full x 2
    assert out["registration"]["cells_finished_before"] == 0
    assert f"spec {parsed.spec_id}" in done.stderr and "before any result" in done.stderr
    report = Path(out["report"]).read_text()
    assert f"## The spec ({parsed.spec_id})" in report and "before any result was seen" in report
    assert "s2l_paper@0.3 vs s2l@0.3" in report and "s2l@0.3 vs random@0.3" in report
    assert parse_spec(yaml.safe_load((Path(out["report"]).parent / "spec.yaml").read_text()))
    body = json.loads(Path(out["report_json"]).read_text())
    pairs = {(c["arm"], c["against"]) for c in body["registered"]}
    assert pairs == {("s2l_paper", "s2l"), ("s2l", "random")}
    assert body["spec"]["spec_id"] == parsed.spec_id
    paper = [c for c in body["cells"] if c["method"] == "s2l_paper"]
    assert len(paper) == 2 and all(c["selector"] == "s2l" for c in paper)
    assert all(c["arm_options"] == {"min_cluster_size": 3, "stratify_by": "source"} for c in paper)
    plain = {c["seed"]: c["rows_hash"] for c in body["cells"] if c["method"] == "s2l"}
    assert any(c["rows_hash"] != plain[c["seed"]] for c in paper)  # its options chose the rows
    holm = {(c["arm"], c["against"]): c["p_holm"] for c in body["registered"]}
    assert all(p >= 0.5 for p in holm.values())  # two seeds: an exact sign-flip p is >= 0.5

    # Another endpoint after the results were seen: a new spec on the same cells, exploratory.
    nll, out2 = _study(tmp_path, {**spec, "endpoint": "nll"})
    assert nll.returncode == 0, nll.stderr[-3000:]
    assert out2["spec_id"] != out["spec_id"] and out2["cells_run"] == 0
    assert out2["registration"]["cells_finished_before"] == 8
    assert "exploratory" in Path(out2["report"]).read_text()

    # An arm's options changed: that arm's cells run again, the others are reused. Ctrl-C in
    # its first cell stops the study (no other cell starts); the same command then runs both.
    arms = {**spec["arms"], "s2l_paper": {"method": "s2l", "stratify_by": "source"}}
    stopped = _interrupt_at_first_cell(tmp_path, {**spec, "arms": arms})
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "interrupted: every finished cell is kept" in stopped.stderr
    assert stopped.stderr.count(" started") == 1 and "report:" not in stopped.stderr
    changed, out3 = _study(tmp_path, {**spec, "arms": arms})
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert out3["cells_run"] == 2 and out3["cells_reused"] == 6

    both, _ = _study(tmp_path, spec, "--methods", "s2l")
    assert both.returncode == 2 and "drop --methods" in both.stderr

    # Another machine, an empty Dagster instance, the same artifact store: the cells' own
    # records resume the study; none trains again, and the report is the same.
    moved, out4 = _study(tmp_path, spec, machine="elsewhere")
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert out4["cells_run"] == 0 and out4["cells_reused"] == 8
    assert out4["registration"]["cells_finished_before"] == 0  # as first registered
    again = json.loads(Path(out4["report_json"]).read_text())
    assert again["registered"] == body["registered"] and again["curve"] == body["curve"]
    record = json.loads(next((tmp_path / "art" / "study_cells").glob("*/*/s2l-0.3-0.json"))
                        .read_text())  # fmt: skip
    import polars as pl

    preds = pl.read_parquet(record["predictions_uri"])  # per item, as the predictions say
    assert record["correct"] == "".join("1" if c else "0" for c in preds["correct"])
    assert len(record["correct"]) == preds.height > 0


@pytest.mark.slow
def test_s2l_study_chooses_on_validation_and_reports_the_held_out_test(tmp_path: Path) -> None:
    """The README's two-judge spec as a user runs it: the grid's cells are judged on
    validation only, the best point is kept, and every reported number comes from a test split
    carved apart from the pool and the validation split, each cell's record saying so."""
    import polars as pl

    spec = _readme_spec("judged.yaml")
    done, out = _study(tmp_path, spec)
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
    planned, plan = _study(tmp_path, spec, "--plan")
    assert planned.returncode == 0 and "started" not in planned.stderr, planned.stderr[-2000:]
    assert plan["study_id"] == split_dir.name and plan["judge"] == "test"
    by_rate = {r["settings"]["learning_rate"]: r for r in plan["recipes"]}
    assert {r["recipe"] for r in by_judge["validation"]} == {
        r["validation"] for r in plan["recipes"]
    }
    chosen = by_rate[tuned["chosen"]["learning_rate"]]["test"]
    assert {r["recipe"] for r in by_judge["test"]} == {chosen}

    # Run again: nothing trains, the same choice is made from the kept records.
    again, out2 = _study(tmp_path, spec)
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
    done, out = _study(tmp_path, spec)
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
