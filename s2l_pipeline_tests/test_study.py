"""The selection study as a product feature: nested subsets, the validation split, cells as
Dagster partitions, the report, and `s2l study` as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from s2l_pipeline.core.selection import SelectionOptions, choose
from s2l_pipeline.core.study.cells import CellSpec, parse_cell_key, study_grid
from s2l_pipeline.core.study.report import StudyCell, build_report
from s2l_pipeline.core.study.split import carve_validation

from .conftest import s2l_cmd, s2l_env


def _pool(n: int = 600, sources: int = 3) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(1)
    ids = [f"{i:06x}" for i in range(n)]
    data = pl.DataFrame(
        {
            "example_id": ids,
            "source": [f"src{i % sources}" for i in range(n)],
            "prompt": [f"q{i}" for i in range(n)],
            "response": [f"r {i}" for i in range(n)],
            "answer": [str(i % 7) for i in range(n)],
            "task": ["math"] * n,
        }
    )
    # Three loss shapes, so K-means has clusters to find.
    base = np.repeat(rng.normal(0, 1, (3, 4)), n // 3 + 1, axis=0)[:n] + rng.normal(0, 0.1, (n, 4))
    traj = pl.DataFrame(
        {
            "example_id": ids,
            **{f"loss_step_{s}": base[:, i] + 3 for i, s in enumerate((0, 1, 2, 3))},
        }
    )
    return data, traj


@pytest.mark.parametrize("method", ["random", "s2l"])
@pytest.mark.parametrize("stratify", [None, "source"])
def test_nested_subsets_grow_by_adding_rows(method: str, stratify: str | None) -> None:
    """With `nested`, each larger budget keeps every row of the smaller ones (one seed); the
    default draws do not promise it (and stay as the committed study drew them)."""
    data, traj = _pool()
    opts = SelectionOptions(clusters=6, nested=True, stratify_by=stratify)
    chosen = [
        set(choose(method, traj, data, b, 3, opts)[0]["example_id"].to_list())
        for b in (0.05, 0.1, 0.2, 0.4, 0.7)
    ]
    assert [len(c) for c in chosen] == [30, 60, 120, 240, 420]
    for small, large in zip(chosen, chosen[1:], strict=False):
        assert small <= large
    plain = [
        set(choose(method, traj, data, b, 3, SelectionOptions(clusters=6))[0]["example_id"])
        for b in (0.1, 0.4)
    ]
    assert not plain[0] <= plain[1]  # what nesting fixes: independent draws


def test_nested_s2l_still_balances_clusters() -> None:
    data, traj = _pool()
    ids, _ = choose("s2l", traj, data, 60, 0, SelectionOptions(clusters=3, nested=True))
    counts = ids.group_by("cluster").len()["len"].to_list()
    assert sorted(counts) == [20, 20, 20]


def test_validation_split_is_per_source_disjoint_and_order_free() -> None:
    data, traj = _pool(sources=4)
    a = carve_validation(data, traj, 0.1, 1000, seed=0)
    assert a.validation.height == 60 and a.train.height == 540
    assert set(a.validation["eval_set"].unique()) == {f"validation:src{i}" for i in range(4)}
    assert a.validation.group_by("eval_set").len()["len"].to_list() == [15] * 4
    held = set(a.validation["example_id"])
    assert not held & set(a.train["example_id"]) and not held & set(a.trajectories["example_id"])
    b = carve_validation(data.reverse(), traj.reverse(), 0.1, 1000, seed=0)
    assert a.validation.equals(b.validation)  # the ids and seed decide, not row order
    other = carve_validation(data, traj, 0.1, 1000, seed=1)
    assert set(other.validation["example_id"]) != held
    capped = carve_validation(data, traj, 0.1, 20, seed=0)
    assert capped.validation.height == 20
    with pytest.raises(ValueError, match="too few to hold out"):
        carve_validation(data.head(4), traj.head(4), 0.5, 1000, seed=0)


def test_a_test_split_is_carved_apart_and_judge_files_leave_the_pool() -> None:
    from s2l_pipeline.core.study.split import HoldOut, carve_split

    data, traj = _pool(sources=4)
    s = carve_split(data, traj, 0, HoldOut(0.1, 1000), HoldOut(0.2, 1000))
    assert s.test.height == 120 and s.validation.height == 48 and s.train.height == 432
    assert set(s.test["eval_set"].unique()) == {f"test:src{i}" for i in range(4)}
    ids = [set(t["example_id"]) for t in (s.test, s.validation, s.train)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    again = carve_split(data.reverse(), traj.reverse(), 0, HoldOut(0.1, 1000), HoldOut(0.2, 1000))
    assert again.test.equals(s.test) and again.validation.equals(s.validation)
    # A file the user holds out: its prompts leave the pool, counted; one set per source.
    given = data.head(30).with_columns(eval_set=pl.lit("mine"), domain=pl.lit("external"))
    f = carve_split(data, traj, 0, HoldOut(0.1, 1000), given)
    assert f.dropped_as_judged == 30 and f.test.height == 30
    assert not set(given["prompt"]) & set(f.train["prompt"])
    assert set(f.test["eval_set"].unique()) == {f"test:{x}" for x in given["source"].unique()}


def test_a_tuning_grid_is_part_of_the_registered_spec() -> None:
    from s2l_pipeline.core.study.spec import SpecError, parse_spec

    base = {"arms": {"s2l": {}}, "budgets": [0.1, 0.2]}
    grid = {"learning_rate": [1e-3, 2e-3], "epochs": [10, 30], "seeds": 2}
    spec = parse_spec({**base, "tuning": grid})
    assert len(spec.tuning.points()) == 4 and spec.tuning_budget == 0.1
    assert spec.tuning.arm == "random" and spec.tuning.seeds == 2
    assert parse_spec(spec.to_dict()).spec_id == spec.spec_id  # it reads back as written
    assert spec.spec_id != parse_spec(base).spec_id
    assert "tuning" not in parse_spec(base).registered()  # old specs keep their ids
    for bad, said in (
        ({"weight_decay": [0.1]}, "not a setting a grid may choose"),
        ({"learning_rate": []}, "a list of candidate values"),
        ({"learning_rate": [1e-3], "arm": "zip"}, "is not an arm"),
        ({"learning_rate": [1e-3], "budget": 1.5}, "a fraction of the pool"),
    ):
        with pytest.raises(SpecError, match=said):
            parse_spec({**base, "tuning": bad})
    with pytest.raises(SpecError, match="also fixed in target"):
        parse_spec({**base, "target": {"epochs": 3}, "tuning": {"epochs": [1, 2]}})


def test_full_seeds_and_the_off_mode_endpoint() -> None:
    from s2l_pipeline.core.study.cells import CellResult
    from s2l_pipeline.core.study.spec import SpecError, parse_spec

    spec = parse_spec({"arms": {"s2l": {}}, "budgets": [0.1], "seeds": 5, "full_seeds": 2,
                       "endpoint": "off_mode"})  # fmt: skip
    keys = [c.key for c in spec.grid()]
    assert [k for k in keys if k.startswith("full")] == ["full-1-0", "full-1-1"]
    assert len(keys) == 2 * 5 + 2 and spec.registered()["full_seeds"] == 2
    with pytest.raises(SpecError, match="full_seeds"):
        parse_spec({"arms": {"s2l": {}}, "budgets": [0.1], "seeds": 3, "full_seeds": 4})
    off = {"test:gcd": {"accuracy": 0.5, "items": 10, "floor": 0.4},
           "test:chain_sum": {"accuracy": 0.1, "items": 20, "floor": 0.0}}  # fmt: skip
    cell = CellResult("s2l-0.1-0", "s2l", 0.1, 0, "x", "r", 60, 0.9, 1.0, "accuracy",
                      off_mode=off)  # fmt: skip
    assert cell.endpoint_score("off_mode") == pytest.approx(0.3)
    assert cell.study_cell("off_mode").floor == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no off-mode score"):
        CellResult("a-0.1-0", "a", 0.1, 0, "x", "r", 1, 0, 0, "ROUGE-L").endpoint_score("off_mode")


def test_draws_nest_seeds_and_say_when_nothing_is_drawn() -> None:
    from s2l_pipeline.core.study.report import StudyCell, paired
    from s2l_pipeline.core.study.spec import SpecError, parse_spec

    base = {"arms": {"s2l": {}}, "budgets": [0.1], "seeds": 3}
    assert parse_spec({**base, "draws": 3}).registered()["draws"] == 3
    assert "draws" not in parse_spec(base).registered()
    with pytest.raises(SpecError, match="fixed seed count"):
        parse_spec({**base, "draws": 2, "seeds": {"min": 5, "max": 10, "look_every": 5}})
    judged = {"validation_files": ["v.jsonl"], "test_files": ["t.jsonl"]}
    with pytest.raises(SpecError, match="nothing is drawn"):
        parse_spec({**base, "draws": 2, "data": {"files": ["a.jsonl"]}, "split": judged})
    # Seeds within a draw agree closely, draws differ: the interval is over the draws.
    cells = [StudyCell(m, 0.1, s, score, draw=d)
             for d, shift in enumerate((0.0, 0.2, -0.1))
             for s in range(3)
             for m, score in (("a", 0.5 + shift + 0.01 * s), ("b", 0.4 + 0.01 * s))]  # fmt: skip
    p = paired(cells, "a", 0.1, "b", 0.1)
    assert (p.seeds, p.draws) == (3, 3) and p.difference == pytest.approx(100 * (0.1 + 0.1 / 3))
    flat = paired([StudyCell(c.method, c.budget, 10 * c.draw + c.seed, c.score) for c in cells],
                  "a", 0.1, "b", 0.1)  # fmt: skip
    assert flat.seeds == 9 and (flat.high - flat.low) < (p.high - p.low)


def test_cell_keys_round_trip_and_bad_ones_are_named() -> None:
    grid = study_grid(["s2l", "learning_percentage"], [0.05, 0.2], 2)
    assert len(grid) == 3 * 2 * 2 + 2  # random joins; full data once per seed
    assert all(parse_cell_key(c.key) == c for c in grid)
    assert CellSpec("learning_percentage", 0.05, 1).key == "learning_percentage-0.05-1"
    for bad in ("s2l-0.1", "s2l-x-0", "s2l-1.5-0", "full-0.5-0"):
        with pytest.raises(ValueError, match=bad):
            parse_cell_key(bad)
    with pytest.raises(ValueError, match="fractions"):
        study_grid(["s2l"], [5], 2)


def test_a_target_at_the_floor_and_too_few_seeds_are_said_first() -> None:
    """A target that never beats the most common answer gets no comparison at all (only what
    the NLL shows); fewer than 3 seeds are named before any interval."""
    cells = [
        StudyCell(m, b, s, 0.02, 3.0 - b, floor=0.10)
        for m, b in (("full", 1.0), ("random", 0.1), ("s2l", 0.1))
        for s in range(2)
    ]
    r = build_report(cells)
    assert r.recommendation[0].startswith("No method at any budget scores above")
    assert r.recommendation[1].startswith("Validation NLL (which needs no correct answer) goes")
    assert len(r.recommendation) == 2
    rng = np.random.default_rng(0)
    learned = [StudyCell(c.method, c.budget, c.seed, 0.5 + rng.normal(0, 0.01), 1.0, 0.1)
               for c in cells]  # fmt: skip
    text = build_report(learned).recommendation
    assert text[0].startswith("Only 2 seeds per cell: an interval from so few seeds")
    assert "none is given" in text[0] and "[" not in " ".join(text)  # and it gives none
    arms = (("full", 1.0), ("random", 0.1), ("s2l", 0.1))
    same = [StudyCell(m, b, s, 0.5, 1.0, 0.1) for m, b in arms for s in range(3)]
    flat = build_report(same).recommendation
    assert any("Every seed gave the same difference" in t for t in flat)


@pytest.mark.slow  # materializes beyond the tiny graph: two study cells
def test_study_assets_in_process_on_the_tiny_graph(tiny_graph_copy) -> None:
    """study_split, two cells (partitions of study_cells) and study_report, materialized for
    real: the validation rows are in neither a cell's training rows nor any test set."""
    from s2l_pipeline.core.stages.manifests import (
        EvalSetsManifest,
        StudyCellManifest,
        read_manifest,
    )
    from s2l_pipeline.core.support.tables import read_table
    from s2l_pipeline.definitions import ASSETS
    from s2l_pipeline.defs.profiles import run_config
    from s2l_pipeline.defs.study import study_cells, study_report, study_split

    _, instance, resources = tiny_graph_copy
    config = run_config("tiny", assets=[])
    split = dg.materialize(
        ASSETS, selection=[study_split], resources=resources, instance=instance, run_config=config
    )
    assert split.success
    [split_mat] = split.asset_materializations_for_node("study_split")
    shares = split_mat.metadata["reference_accuracy"].value
    assert shares and set(shares.values()) == {1.0}  # the scorer accepts every reference
    keys = ["random-0.2-0", "s2l-0.2-0"]
    instance.add_dynamic_partitions("study_cells", keys)
    for key in keys:
        done = dg.materialize(
            ASSETS, selection=[study_cells], partition_key=key, resources=resources,
            instance=instance, run_config=config,
        )  # fmt: skip
        assert done.success
    report = dg.materialize(
        ASSETS, selection=[study_report], resources=resources, instance=instance,
        run_config=config,
    )  # fmt: skip
    assert report.success
    [mat] = report.asset_materializations_for_node("study_report")
    assert (
        mat.metadata["cells"].value == 2 and "data:image/png;base64" in mat.metadata["plot"].value
    )
    store = resources["artifact_store"].store()
    m = split.output_for_node("study_split")
    held = set(read_table(m.validation, store)["example_id"])
    tests = read_table(read_manifest(store, EvalSetsManifest, "eval_sets").eval, store)
    assert not held & set(tests["example_id"])
    for key in keys:
        cell = read_manifest(store, StudyCellManifest, "study_cells", key)
        trained = set(read_table(cell.training_ids_uri, store)["example_id"])
        assert cell.rows == len(trained) and not held & trained
        assert cell.study_id == m.study_id and cell.nested


@pytest.mark.slow
@pytest.mark.live
def test_s2l_study_as_a_user_runs_it(tmp_path: Path) -> None:
    """The README's `s2l study` on the tiny embedded data: cells, a report whose recommendation and
    smallest budget recompute from its cells, each cell's score recomputed from its
    predictions, then a rerun that reuses every cell and writes the same report bytes."""
    import shlex

    from .helpers import readme_commands

    [line] = readme_commands("s2l study")  # the README's command, as written
    argv = shlex.split(line)
    env = s2l_env(tmp_path, profile=None)
    cmd = [*s2l_cmd(), *argv[argv.index(next(a for a in argv if a.endswith("/s2l"))) + 1 :]]
    first = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    out = json.loads(first.stdout.strip().splitlines()[-1])
    assert out["cells"] == 15 and out["cells_run"] == 15 and not out["failed_cells"]
    assert "15 cells, 0 finished before (reused), 15 to run, 1 at a time: about" in first.stderr
    assert "cell 15/15" in first.stderr and "report:" in first.stderr
    assert "0 min" not in first.stderr and "about -" not in first.stderr  # seconds, said so
    assert len(list((tmp_path / "data" / "study_logs").glob("*/*.log"))) == 15  # a log a cell
    body = json.loads(Path(out["report_json"]).read_text())
    cells = [StudyCell(c["method"], c["budget"], c["seed"], c["score"], c["nll"], c["floor"],
                       bool(c["collapsed"])) for c in body["cells"]]  # fmt: skip
    again = build_report(cells, epsilon=1.0)
    assert again.recommendation == out["recommendation"] == body["recommendation"]
    assert again.smallest_budget_within_epsilon == body["smallest_budget_within_epsilon"]
    for c in body["cells"]:  # each score from the cell's own predictions
        preds = pl.read_parquet(c["predictions_uri"])
        per_set = preds.group_by("eval_set").agg(pl.col("correct").cast(pl.Float64).mean())
        assert per_set["correct"].mean() == pytest.approx(c["score"])
        assert preds["eval_set"].str.starts_with("validation:").all()
        modes = (
            preds.group_by("eval_set", "prediction")
            .len()
            .group_by("eval_set")
            .agg(share=pl.col("len").max() / pl.col("len").sum())
        )  # a cell called collapsed gives one text for most rows of some set
        assert not c["collapsed"] or modes["share"].max() > 0.5
    assert Path(out["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _check_mlflow(tmp_path, out["study_id"], 15)
    report_bytes = Path(out["report_json"]).read_bytes()
    second = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    out2 = json.loads(second.stdout.strip().splitlines()[-1])
    assert out2["cells_run"] == 0 and out2["cells_reused"] == 15
    assert Path(out2["report_json"]).read_bytes() == report_bytes
    refused = subprocess.run(
        [*cmd[:-1], "4", "--max-hours", "0.0001"], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert refused.returncode == 2 and "past --max-hours 0.0001" in refused.stderr


def _check_mlflow(home: Path, study_id: str, cells: int) -> None:
    """One parent run for the study holding the report; one child run per cell under it."""
    from mlflow.tracking import MlflowClient

    from s2l_pipeline.core.support.tracking import local_tracking_uri

    client = MlflowClient(tracking_uri=local_tracking_uri(home / "data"))
    exp = client.get_experiment_by_name("s2l_pipeline")
    runs = client.search_runs([exp.experiment_id], f"tags.`s2l.study_id` = '{study_id}'")
    [parent] = [r for r in runs if r.data.tags.get("s2l.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == cells and all("score" in r.data.metrics for r in children)
    listed = [a.path for a in client.list_artifacts(parent.info.run_id, "study_report")]
    assert {"study_report/report.md", "study_report/plot.png"} <= set(listed)


def test_a_study_needs_no_evaluation_file_but_a_run_does(tmp_path: Path) -> None:
    """The blocking preflight check asks for evaluation sets only in a run that evaluates:
    a study on a user's file (its own validation split) passes it, s2l_job's run does not."""
    from s2l_pipeline.definitions import ASSETS, CHECKS
    from s2l_pipeline.defs.data import eval_sets, raw_dataset
    from s2l_pipeline.defs.profiles import run_config

    from .conftest import FIXTURES
    from .helpers import make_resources

    resources = make_resources(str(tmp_path / "art"))
    config = run_config("tiny", assets=[])
    config["ops"] = {
        "raw_dataset": {
            "config": {
                "embedded": {"enabled": False},
                "files": [{"path": str(FIXTURES / "gsm8k_train_sample.jsonl")}],
            }
        }
    }

    def check_passed(selection) -> bool:
        done = dg.materialize(
            [*ASSETS, *CHECKS], selection=selection, resources=resources, run_config=config,
            raise_on_error=False,
        )  # fmt: skip
        [found] = [
            e for e in done.get_asset_check_evaluations() if e.check_name == "inputs_fit_the_run"
        ]
        return found.passed, found.description

    ok, text = check_passed(dg.AssetSelection.assets(raw_dataset).without_checks()
                            | dg.AssetSelection.checks_for_assets(raw_dataset))  # fmt: skip
    assert ok, text
    ok, text = check_passed(
        dg.AssetSelection.assets(raw_dataset, eval_sets)
        | dg.AssetSelection.checks_for_assets(raw_dataset)
    )
    assert not ok and "no evaluation set" in text


def test_the_summary_floor_scores_the_commonest_training_response() -> None:
    from s2l_pipeline.core.evaluation.sanity import summary_floor

    train = pl.DataFrame(
        {
            "source": ["r"] * 3,
            "response": ["No acute process.", "No acute process.", "Cardiomegaly."],
        }
    )
    table = pl.DataFrame(
        {
            "eval_set": ["validation:r"] * 2,
            "source": ["r", "r"],
            "task": ["summarization"] * 2,
            "response": ["No acute process.", "Small right effusion."],
        }
    )
    assert summary_floor(table, train) == {"validation:r": pytest.approx(0.5)}


def test_a_collapsed_target_is_named_and_not_compared() -> None:
    """One prediction for most rows of a set, more than its commonest reference: collapsed;
    a set whose references mostly agree is not."""
    from s2l_pipeline.core.evaluation.sanity import collapsed_sets

    table = pl.DataFrame(
        {
            "eval_set": ["a"] * 4 + ["b"] * 4,
            "task": ["summarization"] * 8,
            "answer_type": [None] * 8,
            "response": ["x y", "z w", "q r", "s t", "same", "same", "same", "other"],
        }
    )
    # "a": one string for every row; "b": the references themselves, 3 of 4 alike
    preds = table.with_columns(
        prediction=pl.when(pl.col("eval_set") == "a").then(pl.lit("same")).otherwise("response")
    )
    assert collapsed_sets(preds, table) == {"a": ("same", 1.0)}
    cells = [
        StudyCell(m, b, s, 0.3 + 0.01 * s, 2.0, None, collapsed=True)
        for m, b in (("full", 1.0), ("random", 0.1))
        for s in range(3)
    ]
    text = build_report(cells).recommendation
    assert text[0].startswith("Every cell's target answers one string") and len(text) == 2
    some = [*cells[:3], *(StudyCell(c.method, c.budget, c.seed, c.score, 2.0) for c in cells[3:])]
    assert build_report(some).recommendation[0].startswith("3 of 6 cells answer one string")


def test_a_fraction_that_rounds_to_no_rows_is_an_error() -> None:
    """0.001 of 365 rows was 0 rows: a study's cell then failed deep in training."""
    from s2l_pipeline.core.selection.budget import resolve_budget

    assert resolve_budget(0.003, 365) == 1
    with pytest.raises(ValueError, match="0.001 of 365 usable rows is 0 rows"):
        resolve_budget(0.001, 365)


def test_ctrl_c_is_seen_before_a_step_starts_as_in_one() -> None:
    """Ctrl-C while a cell's resources are set up fails the run before any step: s2l study
    must stop there too, not go on to the next cell (a race its Ctrl-C test once hit)."""
    import dagster as dg

    from s2l_pipeline.study_cli import _interrupted

    @dg.resource
    def setting_up(_):
        raise KeyboardInterrupt

    @dg.op(required_resource_keys={"setting_up"})
    def cell() -> int:
        return 1

    @dg.op
    def training() -> int:
        raise KeyboardInterrupt

    @dg.op
    def failing() -> int:
        raise ValueError("a cell that fails on its own")

    jobs = [dg.GraphDefinition(name="a", node_defs=[cell]).to_job(
                resource_defs={"setting_up": setting_up}),
            dg.GraphDefinition(name="b", node_defs=[training]).to_job(),
            dg.GraphDefinition(name="c", node_defs=[failing]).to_job()]  # fmt: skip
    seen = [_interrupted(j.execute_in_process(raise_on_error=False)) for j in jobs]
    assert seen == [True, True, False]
