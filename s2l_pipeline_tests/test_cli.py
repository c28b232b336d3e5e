"""The installed ``s2l select`` command, end to end, against the same code the assets run."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from s2l_pipeline.core.selection import SelectionOptions, choose, cluster_table

from .conftest import s2l_cmd, s2l_env


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*s2l_cmd(), "select", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    n = 300
    losses = np.abs(rng.normal(2, 1, size=(n, 4))).astype(np.float32)
    ids = [f"x{i:04d}" for i in range(n)]
    traj = pl.DataFrame(
        {
            "example_id": ids,
            **{f"loss_step_{s}": losses[:, i] for i, s in enumerate((0, 5, 10, 15))},
            "n_response_tokens": [4] * n,
            "truncated": [False] * n,
        }
    )
    data = pl.DataFrame(
        {
            "example_id": ids,
            "source": [f"s{i % 3}" for i in range(n)],
            "prompt": ids,
            "response": ["r"] * n,
        }
    )
    paths = {"traj": root / "traj.parquet", "data": root / "data.parquet", "root": root}
    traj.write_parquet(paths["traj"])
    data.write_parquet(paths["data"])
    return paths


def test_select_s2l_writes_subset_and_clusters(files) -> None:
    out, cl = files["root"] / "sel.parquet", files["root"] / "clusters.parquet"
    res = run(
        "--trajectories",
        str(files["traj"]),
        "--data",
        str(files["data"]),
        "--method",
        "s2l",
        "--budget",
        "0.2",
        "--clusters",
        "6",
        "--seed",
        "3",
        "--stratify-by",
        "source",
        "--clusters-out",
        str(cl),
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["selected"] == 60 and report["method"] == "s2l"
    chosen = pl.read_parquet(out)
    assert chosen.columns == ["example_id", "cluster"] and chosen.height == 60
    clusters = pl.read_parquet(cl)
    assert clusters.columns == ["example_id", "cluster", "distance"] and clusters.height == 300

    # Exactly what the library (and so the assets) choose for the same inputs.
    traj, data = pl.read_parquet(files["traj"]), pl.read_parquet(files["data"])
    opts = SelectionOptions(clusters=6, stratify_by="source")
    table, _ = cluster_table(traj, data, 3, opts)
    expected, _ = choose("s2l", traj, data, 0.2, 3, opts, table)
    assert chosen.equals(expected) and clusters.equals(table)


def test_select_baseline_by_count(files) -> None:
    out = files["root"] / "lc.parquet"
    res = run(
        "--trajectories",
        str(files["traj"]),
        "--method",
        "least_confidence",
        "--budget",
        "25",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    chosen = pl.read_parquet(out)
    traj = pl.read_parquet(files["traj"])
    top = traj.sort(["loss_step_15", "example_id"], descending=[True, False]).head(25)
    assert set(chosen["example_id"]) == set(top["example_id"])


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--budget": "0"}, "budget must be a positive count"),
        ({"--budget": "-0.1"}, "budget must be a positive count"),
        ({"--clusters": "5000"}, "K=5000 clusters for 300 examples"),
        ({"--trajectories": "DATA"}, "no loss_step_<step> columns"),
        ({"--trajectories": "/no/such.parquet"}, "/no/such.parquet: no such trajectories file"),
        ({"--stratify-by": "source"}, "stratifying by 'source' needs data"),
    ],
)
def test_bad_input_is_a_clear_error(files, change, message) -> None:
    args = {
        "--trajectories": str(files["traj"]),
        "--method": "s2l",
        "--budget": "10",
        "--out": str(files["root"] / "bad.parquet"),
    }
    args.update({k: str(files["data"]) if v == "DATA" else v for k, v in change.items()})
    res = run(*[x for kv in args.items() for x in kv])
    assert res.returncode == 2 and message in res.stderr, res.stderr


def test_nan_in_unflagged_rows_is_an_error(files) -> None:
    traj = pl.read_parquet(files["traj"]).with_columns(
        loss_step_10=pl.when(pl.col("example_id") == "x0007")
        .then(float("nan"))
        .otherwise(pl.col("loss_step_10"))
    )
    path = files["root"] / "nan.parquet"
    traj.write_parquet(path)
    res = run(
        "--trajectories",
        str(path),
        "--method",
        "random",
        "--budget",
        "5",
        "--out",
        str(files["root"] / "x.parquet"),
    )
    assert res.returncode == 2
    assert "not flagged truncated (first: example_id x0007, column loss_step_10)" in res.stderr


@pytest.mark.slow
def test_run_executes_the_tiny_profile_into_the_instance(tmp_path: Path, monkeypatch) -> None:
    """`s2l run` applies the profile (400 rows, not the 20,000 default) and records the run."""

    from .conftest import PROJECT_ROOT

    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = s2l_env(tmp_path, profile=None)
    exe = [*s2l_cmd(), "run", "--profile", "tiny"]
    res = subprocess.run(exe, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["success"] and summary["examples"] == 400
    # A terminal a person can follow: the steps' own messages, no DEBUG flood, no warnings.
    assert " - DEBUG - " not in res.stderr and "BetaWarning" not in res.stderr
    # One line when a step starts, one when it ends with its time, its messages under it.
    lines = res.stderr.splitlines()
    assert (
        "▶ selected_subset" in lines
        and "  selected_subset: s2l: 120 of 400 examples selected" in lines
    )
    assert any(re.fullmatch(r"✓ target_model \(\d+:\d\d\)", line) for line in lines)
    training = [line for line in lines if line.startswith("  proxy_checkpoints: training [")]
    assert training and re.search(r"26/26 steps 100% · loss \d+\.\d{4} · \d+:\d\d$", training[-1])
    assert summary["training_set"] == "selected" and "in_domain_accuracy" in summary
    # Each accuracy set against its floor, in words, on the console and in the summary.
    for domain, name in (("in_domain", "In-domain"), ("out_of_domain", "Out-of-domain")):
        below = summary[f"{domain}_accuracy"] <= summary[f"{domain}_floor_accuracy"]
        [said] = [w for w in summary["in_words"] if w.startswith(f"{name} accuracy")]
        assert ("at or below its floor" in said) == below and f"s2l run: {said}" in lines

    import dagster as dg

    monkeypatch.chdir(tmp_path)  # dagster.yaml keeps its storage relative to the project root
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    [record] = instance.get_run_records()
    assert record.dagster_run.run_id == summary["run_id"]
    assert not (tmp_path / "mlruns").exists()  # MLflow artifacts sit beside its database
    assert (tmp_path / "data" / "mlflow" / "mlflow.db").exists()


@pytest.mark.slow
def test_run_failure_says_which_step_and_why(tmp_path: Path) -> None:
    """A failing run names the step and the reason, not just {"success": false}."""

    from .conftest import PROJECT_ROOT

    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    missing = tmp_path / "nowhere" / "train.jsonl"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "ops:\n  raw_dataset:\n    config:\n      embedded: {enabled: false}\n"
        f"      files: [{{path: '{missing}'}}]\n"
    )
    env = s2l_env(tmp_path)
    res = subprocess.run(
        [*s2l_cmd(), "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 1
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert not summary["success"] and str(missing) in summary["failed_steps"]["raw_dataset"]
    assert f"step raw_dataset failed: {missing}" in res.stderr

    cfg.write_text("proxy_checkpoints: {epochs: 2}\n")
    res = subprocess.run(
        [*s2l_cmd(), "run", "--config", str(cfg)], capture_output=True, text=True, env=env
    )
    assert res.returncode == 2 and "expected the launchpad's keys" in res.stderr


@pytest.mark.slow
def test_run_on_a_users_file_in_one_command(tmp_path: Path) -> None:
    """`s2l run --data FILE --budget N --method M`: no run config to write, no evaluation file
    (a tenth of each source is held out, and said); `--until selected_subset` then gives the
    subset of the whole file without training a target."""

    from .conftest import PROJECT_ROOT
    from .helpers import new_rows, write_shard

    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    train = write_shard(tmp_path / "mine" / "train.jsonl", new_rows(80, 3))
    env = s2l_env(tmp_path)
    cmd = [*s2l_cmd(), "run", "--data", str(train), "--budget", "24", "--method", "random"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "s2l run: no --eval: 10% of each source" in res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    held = json.loads((tmp_path / "art/_manifests/raw_dataset/__unpartitioned__.json").read_text())
    assert 0 < held["heldout"]["rows"] <= 8 + 16  # 10% of each source's problems, whole
    assert summary["examples"] == 80 - held["heldout"]["rows"] and "in_domain_accuracy" in summary
    subset = json.loads(
        (tmp_path / "art/_manifests/selected_subset/__unpartitioned__.json").read_text()
    )
    assert subset["method"] == "random" and subset["budget"] == 24

    res = subprocess.run(
        [*cmd, "--until", "selected_subset"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["examples"] == 80 and Path(summary["subset"]).exists()  # the whole file
    assert "in_domain_accuracy" not in summary and "no --eval" not in res.stderr
    assert "target_model" not in summary["assets"] and "s2l run: the subset is" in res.stderr


def test_whole_graph_hint_only_for_select_all() -> None:
    from s2l_pipeline.defs.jobs import whole_graph_hint

    assert whole_graph_hint(["dagster", "asset", "materialize", "--select", "*", "-m", "x"])
    assert whole_graph_hint(["dagster", "asset", "materialize", "--select=*"])
    assert whole_graph_hint(["dagster", "asset", "materialize", "--select", "raw_dataset"]) is None
    assert whole_graph_hint(["dagster", "dev"]) is None


@pytest.mark.slow
def test_materialize_select_all_says_what_to_run_instead(tmp_path: Path) -> None:
    """Dagster cannot run `--select '*'` over three partitionings; the failure says what to run."""
    import os

    from .conftest import PROJECT_ROOT

    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    dagster = str(Path(sys.executable).with_name("dagster"))
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "S2L_ARTIFACT_ROOT": str(tmp_path / "a")}
    cmd = [dagster, "asset", "materialize", "--select", "*", "-m", "s2l_pipeline.definitions"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert res.returncode != 0
    assert "cannot run here" in res.stderr and "s2l run" in res.stderr
    assert not (tmp_path / "a").exists()  # nothing was materialized


@pytest.mark.slow
def test_run_prints_every_failed_check(tmp_path: Path) -> None:
    """A failed check was printed as '✓ eval_sets_eval_sets_not_in_training': an evaluation
    file repeating training rows, and a multiple-choice file, as a user runs them."""

    import polars as pl

    from .conftest import PROJECT_ROOT
    from .helpers import MC, MC_FIELDS, new_rows, write_shard

    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    rows = new_rows(80, 3)
    train = write_shard(tmp_path / "mine" / "train.jsonl", rows)
    leaked = pl.concat(
        [rows.head(6), rows.slice(6, 4).with_columns(pl.col("prompt").str.to_uppercase())]
    )
    leak = write_shard(tmp_path / "mine" / "leak.jsonl", leaked)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        json.dumps(
            {
                "ops": {
                    "raw_dataset": {
                        "config": {"embedded": {"enabled": False}, "files": [{"path": str(train)}]}
                    },
                    "eval_sets": {
                        "config": {
                            "files": [
                                {"path": str(leak), "name": "leak"},
                                {"path": str(MC), "name": "mc", "fields": MC_FIELDS},
                            ]
                        }
                    },
                }
            }
        )
    )
    env = s2l_env(tmp_path)
    cmd = [*s2l_cmd(), "run", "--config", str(cfg), "--budget", "24", "--method", "random"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    lines = res.stderr.splitlines()
    leak_lines = [
        line
        for line in lines
        if line.startswith("⚠ check eval_sets_not_in_training on eval_sets FAILED (WARN): ")
    ]
    assert len(leak_lines) == 1, res.stderr[-3000:]
    assert "leak: 6 verbatim, 10 normalized" in leak_lines[0]
    assert "leaked_rows=6" in leak_lines[0] and "leaked_rows_normalized=10" in leak_lines[0]
    # the step holding eval_sets' checks (defs/check_groups.py) ends marked, not as a success
    assert not any(line.startswith("✓ eval_sets_checks") for line in lines)
    assert any(line.startswith("⚠ eval_sets_checks (") for line in lines)
    failed = {f["check"]: f for f in summary["failed_checks"]}
    assert failed["eval_sets_not_in_training"]["numbers"]["leaked_rows"] == 6
    assert failed["eval_sets_not_in_training"]["check_description"].startswith("No evaluation")
    for name in failed:  # every failed check has its own line
        assert any(line.startswith(f"⚠ check {name} on ") for line in lines), name
    assert "references_score_as_correct" not in failed  # letters read as letters
    assert "INFO mlflow" not in res.stderr and "[transformers]" not in res.stderr
    assert summary["metric_by_set"]["mc"] == "accuracy (choice)"
    assert "external_floor_accuracy" in summary
    assert any("s2l run: check eval_sets_not_in_training on eval_sets failed" in ln for ln in lines)

    # The subset taken away as the user's own records, with its lineage.
    assert "s2l export --out DIR" in res.stderr and summary["subset"].endswith("subset.parquet")
    out = tmp_path / "export"
    res = subprocess.run(
        [*s2l_cmd(), "export", "--out", str(out)], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in (out / "subset.jsonl").read_text().splitlines()]
    assert len(records) == 24 and all(
        set(r) == {"instruction", "output", "source"} for r in records
    )
    prompts = set(rows["prompt"].to_list())
    assert all(r["instruction"] in prompts for r in records)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 24 and manifest["method"] == "random"
    assert manifest["lineage"]["dataset"]["raw_dataset"] and manifest["rows_per_file"] == {
        str(train): 24
    }


@pytest.mark.slow
def test_mistakes_are_caught_before_the_proxy_trains(tmp_path: Path) -> None:
    """A budget above the pool was found after proxy training and scoring; a missing --eval
    file after the target had trained."""

    from .conftest import PROJECT_ROOT

    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = s2l_env(tmp_path)
    missing = tmp_path / "nowhere" / "test.jsonl"
    cmd = [*s2l_cmd(), "run", "--budget", "100000", "--eval", str(missing)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 1, res.stderr[-3000:]
    lines = res.stderr.splitlines()
    assert "▶ proxy_checkpoints" not in lines  # nothing trained
    [check] = [ln for ln in lines if ln.startswith("⚠ check inputs_fit_the_run on raw_dataset")]
    assert "budget 100000 is more than the 400 usable rows" in check
    assert str(missing) in check
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert not summary["success"]
    assert [f["check"] for f in summary["failed_checks"]] == ["inputs_fit_the_run"]
    # the reason first, no "Dependencies for step ... Not executing" lines
    assert not any("Not executing" in line for line in lines)
    assert summary["failed_steps"] == {
        "raw_dataset_checks": "a blocking check failed; nothing after it ran "
        "(the check's line says why)"
    }


@pytest.mark.slow  # beyond the fast loop
def test_select_writes_the_users_records_in_the_format_out_names(tmp_path: Path) -> None:
    """`s2l select` wrote Parquet bytes into a file named .jsonl, ids only, and took --data only
    as raw_dataset-shaped Parquet."""
    from s2l_pipeline.core.data.ingest import DatasetSpec, FileSource, load_dataset

    from .helpers import MC, MC_FIELDS

    loaded = load_dataset(
        DatasetSpec(embedded=None, files=(FileSource(str(MC), fields=MC_FIELDS),))
    )
    rng = np.random.default_rng(1)
    traj = pl.DataFrame(
        {
            "example_id": loaded.train["example_id"],
            **{f"loss_step_{s}": rng.random(loaded.train.height) for s in (0, 5, 10)},
            "n_response_tokens": [4] * loaded.train.height,
            "truncated": [False] * loaded.train.height,
        }
    )
    traj.write_parquet(tmp_path / "traj.parquet")
    common = ["--trajectories", str(tmp_path / "traj.parquet"), "--method", "random"]
    common += ["--budget", "10"]
    fields = json.dumps(MC_FIELDS)
    for name in ("sel.jsonl", "sel.json", "sel.parquet"):
        out = tmp_path / name
        res = run(*common, "--data", str(MC), "--fields", fields, "--out", str(out))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["wrote"] == "records"
        if name.endswith(".jsonl"):
            records = [json.loads(line) for line in out.read_text().splitlines()]
        elif name.endswith(".json"):
            records = json.loads(out.read_text())
        else:
            records = pl.read_parquet(out).to_dicts()
        originals = {json.loads(line)["record_id"]: json.loads(line) for line in MC.open()}
        assert len(records) == 10
        for r in records:  # the user's own records, every field kept (options list, letter, id)
            assert r == originals[r["record_id"]]
    ids = tmp_path / "ids.jsonl"
    res = run(*common, "--out", str(ids))
    assert res.returncode == 0, res.stderr
    assert [set(json.loads(line)) for line in ids.read_text().splitlines()] == [{"example_id"}] * 10
    res = run(*common, "--out", str(tmp_path / "sel.txt"))
    assert res.returncode == 2 and "unknown format '.txt'" in res.stderr


def test_until_selects_an_asset_and_what_it_reads() -> None:
    """`s2l run --until selected_subset` runs the proxy to the subset, no target, no eval
    sets; the run config keeps only the settings of the assets it runs."""
    from s2l_pipeline.cli import UNTIL_ASSETS, only_selected_ops, until_selection
    from s2l_pipeline.definitions import defs
    from s2l_pipeline.defs.jobs import MAIN_ASSETS

    assert list(UNTIL_ASSETS) == [a.key.path[-1] for a in MAIN_ASSETS]
    assert until_selection(defs, None) is None
    names = {k.path[-1] for k in until_selection(defs, "selected_subset")}
    assert names == {
        "raw_dataset",
        "proxy_checkpoints",
        "loss_trajectories",
        "training_pool",
        "trajectory_clusters",
        "selected_subset",
    }
    assert {k.path[-1] for k in until_selection(defs, "proxy_checkpoints")} == {
        "raw_dataset",
        "proxy_checkpoints",
    }
    cfg = {"ops": {"target_model": {"config": {"epochs": 1}}, "raw_dataset": {"config": {}}}}
    kept = only_selected_ops(cfg, until_selection(defs, "proxy_checkpoints"))
    assert kept == {"ops": {"raw_dataset": {"config": {}}}}


def test_flags_for_duplicates_eval_fields_and_a_run_without_eval() -> None:
    """--duplicates reaches raw_dataset; --eval-fields maps only the evaluation files (a chat
    training file needs no mapping); --data without --eval carves a capped test set, said in
    words, unless the run stops before evaluating or the config chose."""
    from s2l_pipeline.cli import parser
    from s2l_pipeline.launch import heldout_without_eval, with_overrides

    mc = '{"prompt": "{question}", "response": "{rationale}", "answer": "{correct}"}'
    args = parser().parse_args(
        ["run", "--data", "chat.jsonl", "--eval", "mc.jsonl", "--eval-fields", mc,
         "--duplicates", "reject"]
    )  # fmt: skip
    cfg = with_overrides({}, args)
    raw, evals = cfg["ops"]["raw_dataset"]["config"], cfg["ops"]["eval_sets"]["config"]
    assert raw["files"] == [{"path": "chat.jsonl"}] and raw["duplicates"] == "reject"
    assert evals["files"] == [{"path": "mc.jsonl", "fields": json.loads(mc)}]
    assert heldout_without_eval(cfg, args) is None  # it has --eval

    args = parser().parse_args(["run", "--data", "mine.jsonl"])
    cfg = with_overrides({}, args)
    said = heldout_without_eval(cfg, args)
    assert cfg["ops"]["raw_dataset"]["config"]["heldout_per_source"] == 200
    assert said.startswith("no --eval: 10% of each source (at most 200 problems")
    args = parser().parse_args(["run", "--data", "mine.jsonl", "--until", "selected_subset"])
    cfg = with_overrides({}, args)
    assert heldout_without_eval(cfg, args) is None and "heldout_per_source" not in str(cfg)
    args = parser().parse_args(["run", "--data", "mine.jsonl"])
    chosen = {"ops": {"raw_dataset": {"config": {"heldout_per_source": 0}}}}
    assert heldout_without_eval(with_overrides(chosen, args), args) is None
