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

from .helpers import readme_spec, run_study

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


@pytest.mark.slow
def test_s2l_study_from_the_readmes_spec_registers_it_and_reuses_cells(tmp_path: Path) -> None:
    """The README's spec run as a user runs it: named arms with their own selector options,
    the registered comparisons with Holm in the report, the spec beside the report; a changed
    endpoint is a new spec, said to be exploratory, on the same cells; a changed arm is new
    cells of that arm only."""
    spec = readme_spec()
    done, out = run_study(tmp_path, spec)
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
    nll, out2 = run_study(tmp_path, {**spec, "endpoint": "nll"})
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
    changed, out3 = run_study(tmp_path, {**spec, "arms": arms})
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert out3["cells_run"] == 2 and out3["cells_reused"] == 6

    both, _ = run_study(tmp_path, spec, "--methods", "s2l")
    assert both.returncode == 2 and "drop --methods" in both.stderr

    # Another machine, an empty Dagster instance, the same artifact store: the cells' own
    # records resume the study; none trains again, and the report is the same.
    moved, out4 = run_study(tmp_path, spec, machine="elsewhere")
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
