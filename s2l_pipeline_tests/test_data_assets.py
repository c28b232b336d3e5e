"""Real in-process Dagster materializations of the data assets."""

import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from s2l_pipeline.core.support.hashing import table_hash
from s2l_pipeline.defs.data import eval_sets, raw_dataset
from s2l_pipeline.defs.profiles import run_config
from s2l_pipeline.defs.resources import (
    MlflowTracking,
)

from .conftest import FIXTURES, PROJECT_ROOT
from .helpers import make_resources, meta


def test_local_folders_follow_s2l_data_dir(tmp_path: Path, monkeypatch) -> None:
    """Resume state, artifacts and the MLflow store all move with S2L_DATA_DIR, whatever the
    current directory: a rerun started elsewhere still finds the killed run's checkpoints."""
    from s2l_pipeline.definitions import artifact_store_resource

    data, elsewhere = tmp_path / "data_dir", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("S2L_ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("S2L_DATA_DIR", str(data))
    store = artifact_store_resource()
    assert (store.work_dir, store.root) == (str(data / "work"), str(data / "artifacts"))
    assert store.work_path("proxy") == data / "work" / "proxy"
    assert MlflowTracking().local_uri() == f"sqlite:///{data / 'mlflow' / 'mlflow.db'}"

    monkeypatch.setenv("S2L_ARTIFACT_ROOT", "s3://bucket/prefix")  # the store moves alone
    store = artifact_store_resource()
    assert (store.work_dir, store.root) == (str(data / "work"), "s3://bucket/prefix")

    monkeypatch.delenv("S2L_DATA_DIR")
    assert artifact_store_resource().work_dir == "data/work"  # the README's default


DATA = ["raw_dataset", "eval_sets"]


@pytest.mark.slow  # beyond the fast loop (the session tiny graph covers it)
def test_tiny_profile_materializes_both_assets(tmp_path: Path) -> None:
    result = dg.materialize(
        [raw_dataset, eval_sets],
        resources=make_resources(str(tmp_path / "art")),
        run_config=run_config("tiny", assets=DATA),
    )
    assert result.success
    raw = meta(result, "raw_dataset")
    assert raw["dagster/row_count"] == 400 and raw["rejected_rows"] == 0
    train = pl.read_parquet(raw["train_path"])
    assert train.columns == [
        "example_id",
        "source",
        "prompt",
        "response",
        "answer",
        "task",
        "messages",
    ]
    assert raw["content_hash"] == table_hash(train) == raw["train_content_hash"]
    assert "basic_arithmetic" in raw["rows_per_source"] and "p99" in raw["token_lengths"]
    manifest = json.loads(Path(raw["manifest"]).read_text())
    assert manifest["train"]["uri"] == raw["train_path"]

    [mat] = result.asset_materializations_for_node("raw_dataset")
    assert mat.tags["dagster/data_version"] == raw["content_hash"]

    ev = meta(result, "eval_sets")
    table = pl.read_parquet(ev["eval_path"])
    domains = dict(table.group_by("domain").len().iter_rows())
    assert domains == {"in_domain": 12 * 10, "out_of_domain": 4 * 10}


@pytest.mark.slow  # beyond the fast loop
def test_same_config_same_data_version(tmp_path: Path) -> None:
    hashes = []
    for run in range(2):
        result = dg.materialize(
            [raw_dataset],
            resources=make_resources(str(tmp_path / f"art{run}")),
            run_config=run_config("tiny", assets=["raw_dataset"]),
        )
        hashes.append(meta(result, "raw_dataset")["content_hash"])
    assert hashes[0] == hashes[1]


def files_config(max_share: float) -> dict:
    return run_config(
        "tiny",
        {
            "raw_dataset": {
                "embedded": {"enabled": False},
                "files": [
                    {"path": str(FIXTURES / "gsm8k_train_sample.jsonl")},
                    {"path": str(FIXTURES / "radiology_sample.jsonl")},
                    {"path": str(FIXTURES / "bad_rows.jsonl")},
                ],
                "max_rejected_share": max_share,
                "duplicates": "reject",  # bad_rows.jsonl repeats gsm8k rows: 10 rejected
            }
        },
        assets=["raw_dataset"],
    )


def test_too_many_rejected_fails_with_a_clear_message_and_keeps_rejects(tmp_path: Path) -> None:
    result = dg.materialize(
        [raw_dataset],
        resources=make_resources(str(tmp_path / "art")),
        run_config=files_config(0.01),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.step_failure_data.user_failure_data.description
    # 7 bad rows + the 3 good bad_rows lines that repeat gsm8k lines 1-3, out of 20 + 12 + 10.
    assert "10 of 42 rows rejected" in text and "bad_rows.jsonl" in text
    rejected_files = list((tmp_path / "art" / "raw_dataset" / "rejected").glob("*.parquet"))
    assert len(rejected_files) == 1 and pl.read_parquet(rejected_files[0]).height == 10


def test_rejected_rows_are_kept_per_input(tmp_path: Path) -> None:
    """Same accepted rows, other rejected rows: each run's manifest points at its own rows."""
    good = (FIXTURES / "gsm8k_train_sample.jsonl").read_text()
    paths = []
    for name, bad in (("a", '{"question": "no answer"}\n'), ("b", "not json\n")):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(good + bad)
        paths.append(path)
    res = make_resources(str(tmp_path / "art"))
    metas = []
    for path in paths:
        cfg = run_config(
            "tiny",
            {
                "raw_dataset": {
                    "embedded": {"enabled": False},
                    "files": [{"path": str(path)}],
                    "max_rejected_share": 0.5,
                }
            },
            assets=["raw_dataset"],
        )
        metas.append(
            meta(dg.materialize([raw_dataset], resources=res, run_config=cfg), "raw_dataset")
        )
    a, b = metas
    assert a["content_hash"] == b["content_hash"]  # the same accepted rows
    assert a["rejected_path"] != b["rejected_path"]
    assert pl.read_parquet(a["rejected_path"])["file"].to_list() == [str(paths[0])]
    assert pl.read_parquet(b["rejected_path"])["file"].to_list() == [str(paths[1])]


def test_rejects_under_threshold_are_counted_in_metadata(tmp_path: Path) -> None:
    result = dg.materialize(
        [raw_dataset],
        resources=make_resources(str(tmp_path / "art")),
        run_config=files_config(0.5),
    )
    raw = meta(result, "raw_dataset")
    assert raw["dagster/row_count"] == 32 and raw["rejected_rows"] == 10
    assert raw["rejected_share"] == pytest.approx(10 / 42, abs=1e-6)
    assert "duplicate example" in raw["rejected_by_reason"]
    assert "radiology" in raw["rows_per_source"] and "gsm8k" in raw["rows_per_source"]


def test_unknown_schema_fails_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"text": "hello"}\n')
    cfg = run_config(
        "tiny",
        {"raw_dataset": {"embedded": {"enabled": False}, "files": [{"path": str(bad)}]}},
        assets=["raw_dataset"],
    )
    result = dg.materialize(
        [raw_dataset],
        resources=make_resources(str(tmp_path / "art")),
        run_config=cfg,
        raise_on_error=False,
    )
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.step_failure_data.user_failure_data.description
    assert str(bad) in text and "supported schemas" in text


def test_eval_files_are_their_own_sets(tmp_path: Path) -> None:
    cfg = run_config(
        "tiny",
        assets=DATA,
        overrides={
            "eval_sets": {
                "files": [
                    {"path": str(FIXTURES / "gsm8k_test_sample.jsonl"), "name": "gsm8k_test"},
                    {"path": str(FIXTURES / "math500_sample.jsonl"), "name": "math500"},
                ]
            }
        },
    )
    result = dg.materialize(
        [raw_dataset, eval_sets], resources=make_resources(str(tmp_path / "art")), run_config=cfg
    )
    table = pl.read_parquet(meta(result, "eval_sets")["eval_path"])
    ext = dict(table.filter(pl.col("domain") == "external").group_by("eval_set").len().iter_rows())
    assert ext == {"gsm8k_test": 20, "math500": 20}


def test_artifacts_and_manifests_in_s3(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    import boto3

    result = dg.materialize(
        [raw_dataset, eval_sets],
        resources=make_resources(f"s3://{s3_bucket}/s2l", s3_endpoint),
        run_config=run_config("tiny", assets=DATA),
    )
    assert result.success
    raw = meta(result, "raw_dataset")
    assert raw["train_path"].startswith(f"s3://{s3_bucket}/s2l/raw_dataset/")
    keys = {
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=s3_bucket)[
            "Contents"
        ]
    }
    assert "s2l/_manifests/raw_dataset/__unpartitioned__.json" in keys
    assert any(
        k.endswith("eval_sets/" + meta(result, "eval_sets")["content_hash"][:16] + "/eval.parquet")
        for k in keys
    )


def test_instance_config_limits_the_gpu_pool(tmp_path: Path, monkeypatch) -> None:
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    assert instance.event_log_storage.get_concurrency_info("gpu").limit == 1
    assert (tmp_path / "data" / "dagster" / "storage").is_dir()


def test_checks_pass_on_clean_data_and_flag_contamination(tmp_path: Path) -> None:
    from s2l_pipeline.definitions import CHECKS

    sample = str(FIXTURES / "gsm8k_train_sample.jsonl")
    cfg = run_config(
        "tiny",
        assets=DATA,
        overrides={
            "raw_dataset": {"files": [{"path": sample}]},
            # The training file itself as an "eval" file: every prompt leaks.
            "eval_sets": {"files": [{"path": sample, "name": "leaky"}]},
        },
    )
    result = dg.materialize(
        [raw_dataset, eval_sets, *CHECKS],
        resources=make_resources(str(tmp_path / "art")),
        run_config=cfg,
    )
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["raw_dataset_rows_valid"].passed
    leak = evals["eval_sets_not_in_training"]
    assert not leak.passed and leak.severity == dg.AssetCheckSeverity.WARN
    assert leak.metadata["leaky"].value == 20


def test_checks_sharing_a_step_still_run_alone(tmp_path: Path) -> None:
    """eval_sets' two checks are one step (defs/check_groups.py); selecting one runs only it,
    as the UI's "Execute" on a single check does."""
    from s2l_pipeline.definitions import CHECKS

    sample = str(FIXTURES / "gsm8k_train_sample.jsonl")
    cfg = run_config(
        "tiny",
        assets=DATA,
        overrides={"raw_dataset": {"files": [{"path": sample}]},
                   "eval_sets": {"files": [{"path": sample, "name": "leaky"}]}},
    )  # fmt: skip
    resources = make_resources(str(tmp_path / "art"))
    dg.materialize([raw_dataset, eval_sets], resources=resources, run_config=cfg)
    one = dg.AssetCheckKey(dg.AssetKey("eval_sets"), "references_score_as_correct")
    result = dg.materialize(
        [raw_dataset, eval_sets, *CHECKS],
        resources=resources,
        selection=dg.AssetSelection.checks(one),
    )
    assert [e.check_name for e in result.get_asset_check_evaluations()] == [one.name]
    assert not result.get_asset_materialization_events()  # the check alone, no asset rebuilt


def test_field_mapping_through_run_config(tmp_path: Path) -> None:
    """The launchpad's `fields:` on a training file and on an evaluation file."""
    from .helpers import AQUA, AQUA_FIELDS

    path = tmp_path / "aqua.json"
    path.write_text("\n".join(json.dumps(r) for r in AQUA[:2]))
    cfg = run_config(
        "tiny",
        {
            "raw_dataset": {
                "embedded": {"enabled": False},
                "files": [{"path": str(path), "source": "aqua", "fields": AQUA_FIELDS}],
            },
            "eval_sets": {
                "ood_per_family": 0,
                "files": [{"path": str(path), "name": "aqua_test", "fields": AQUA_FIELDS}],
            },
        },
        assets=DATA,
    )
    result = dg.materialize(
        [raw_dataset, eval_sets], resources=make_resources(str(tmp_path / "art")), run_config=cfg
    )
    raw, ev = meta(result, "raw_dataset"), meta(result, "eval_sets")
    assert raw["dagster/row_count"] == 2 and "aqua" in raw["rows_per_source"]
    table = pl.read_parquet(ev["eval_path"])
    assert table["eval_set"].to_list() == ["aqua_test"] * 2
    assert table["answer"].to_list() == ["A", "B"]


def test_duplicates_drop_is_counted_in_metadata(tmp_path: Path) -> None:
    rows = (FIXTURES / "radiology_sample.jsonl").read_text().splitlines()
    path = tmp_path / "reports.jsonl"
    path.write_text("\n".join(rows + rows[:4]) + "\n")
    cfg = run_config(
        "tiny",
        {
            "raw_dataset": {
                "embedded": {"enabled": False},
                "files": [{"path": str(path)}],
                "duplicates": "drop",
            }
        },
        assets=["raw_dataset"],
    )
    res = dg.materialize(
        [raw_dataset], resources=make_resources(str(tmp_path / "a")), run_config=cfg
    )
    raw = meta(res, "raw_dataset")
    assert raw["dagster/row_count"] == len(rows) and raw["rejected_rows"] == 0
    assert raw["duplicates_dropped"] == 4 and pl.read_parquet(raw["duplicates_path"]).height == 4


def test_a_check_that_raises_lets_the_others_of_its_step_report() -> None:
    import logging
    from types import SimpleNamespace

    from s2l_pipeline.defs.check_groups import selected_results

    keys = {dg.AssetCheckKey(dg.AssetKey("a"), n) for n in ("first", "broken", "last")}
    context = SimpleNamespace(selected_asset_check_keys=keys, log=logging.getLogger("t"))

    def broken() -> dg.AssetCheckResult:
        raise ValueError("unreadable table")

    checks = {
        "first": lambda: dg.AssetCheckResult(passed=True),
        "broken": broken,
        "last": lambda: dg.AssetCheckResult(passed=False),
        "unselected": lambda: dg.AssetCheckResult(passed=True),
    }
    results = selected_results(context, "a", checks)
    seen = [next(results), next(results)]
    assert [(r.check_name, r.passed, r.asset_key) for r in seen] == [
        ("first", True, dg.AssetKey("a")), ("last", False, dg.AssetKey("a"))
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unreadable table"):
        next(results)
