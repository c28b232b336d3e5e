"""A user's mistakes get one clear line naming what to change (issue 20, first parts)."""

import argparse
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from s2l_pipeline.cli import parser
from s2l_pipeline.core.data.formats import UnknownSchemaError
from s2l_pipeline.core.data.ingest import (
    DatasetSpec,
    FileSource,
    TooManyRejected,
    check_rejections,
    load_dataset,
)
from s2l_pipeline.defs.data import eval_sets, raw_dataset
from s2l_pipeline.launch import config_mistakes, with_overrides

from .helpers import make_resources, meta

FIXTURES = Path(__file__).parent / "fixtures"
MC = FIXTURES / "multiple_choice_sample.jsonl"


def test_config_typo_is_one_line_with_the_nearest_key() -> None:
    from s2l_pipeline.definitions import defs

    job = defs.resolve_job_def("s2l_job")
    cfg = {"ops": {"proxy_checkpoints": {"config": {"epoch": 2}}, "proxy_checkpoint": {}}}
    lines = config_mistakes(job, cfg)
    assert sorted(lines) == [
        "unknown key 'epoch' under ops:proxy_checkpoints:config: did you mean 'epochs'?",
        "unknown key 'proxy_checkpoint' under ops: did you mean 'proxy_checkpoints'?",
    ]
    assert config_mistakes(job, {"ops": {"proxy_checkpoints": {"config": {"epochs": 2}}}}) == []


def _run_args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["run", *argv])


def test_data_flag_keeps_what_the_config_says_about_that_path() -> None:
    """--data replaced the file list and dropped the config's fields: for that file."""
    mapping = {"prompt": "{question}", "response": "{rationale}", "answer": "{correct}"}
    cfg = {
        "ops": {"raw_dataset": {"config": {"files": [{"path": "aqua.json", "fields": mapping}]}}}
    }
    out = with_overrides(cfg, _run_args("--data", "aqua.json", "--data", "other.jsonl"))
    files = out["ops"]["raw_dataset"]["config"]["files"]
    assert files == [{"path": "aqua.json", "fields": mapping}, {"path": "other.jsonl"}]


def test_fields_and_task_flags_map_a_file_in_one_command() -> None:
    fields = '{"prompt": "{findings}", "response": "{impression}"}'
    args = _run_args("--data", "r.jsonl", "--eval", "t.jsonl", "--fields", fields)
    args.task = "summarization"
    out = with_overrides({}, args)
    expected = {"fields": json.loads(fields), "task": "summarization"}
    assert out["ops"]["raw_dataset"]["config"]["files"] == [{"path": "r.jsonl", **expected}]
    assert out["ops"]["eval_sets"]["config"]["files"] == [{"path": "t.jsonl", **expected}]
    with pytest.raises(ValueError, match="--fields: not a JSON object"):
        with_overrides({}, _run_args("--data", "r.jsonl", "--fields", "{prompt: x"))


def test_every_profile_is_accepted() -> None:
    from s2l_pipeline.defs.profiles import PROFILES

    for name in PROFILES:
        assert _run_args("--profile", name).profile == name


def test_malformed_template_names_file_and_template() -> None:
    bad = {"prompt": "{question\nOptions: {options}", "response": "{rationale}"}
    with pytest.raises(UnknownSchemaError) as err:
        load_dataset(DatasetSpec(embedded=None, files=(FileSource(str(MC), fields=bad),)))
    assert str(MC) in str(err.value) and "the prompt template" in str(err.value)
    assert "unmatched '{'" in str(err.value)


def test_empty_input_is_a_clear_error(tmp_path: Path) -> None:
    """An empty file as the only input ended in an IndexError inside proxy_checkpoints."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    loaded = load_dataset(DatasetSpec(embedded=None, files=(FileSource(str(empty)),)))
    with pytest.raises(TooManyRejected, match=f"no training rows.*empty files skipped: {empty}"):
        check_rejections(loaded, 0.01)


def test_advice_fits_the_cause_when_every_row_fails() -> None:
    wrong = {"prompt": "{problem}", "response": "{solution}"}  # not this file's field names
    loaded = load_dataset(DatasetSpec(embedded=None, files=(FileSource(str(MC), fields=wrong),)))
    with pytest.raises(TooManyRejected) as err:
        check_rejections(loaded, 0.01)
    assert "every row was rejected" in str(err.value)
    assert "raise max_rejected_share" not in str(err.value)


def test_own_data_runs_evaluate_only_the_users_sets(tmp_path: Path) -> None:
    """A radiology run headlined out_of_domain_accuracy=0.0 from the embedded families."""
    fields = {
        "prompt": "{question}\nOptions: {options}",
        "response": "{rationale}",
        "answer": "{correct}",
    }
    config = {
        "raw_dataset": {
            "config": {
                "embedded": {"enabled": False},
                "files": [{"path": str(MC), "fields": fields}],
            }
        },
        "eval_sets": {"config": {"files": [{"path": str(MC), "name": "mc", "fields": fields}]}},
    }
    result = dg.materialize(
        [raw_dataset, eval_sets],
        resources=make_resources(str(tmp_path / "art")),
        run_config={"ops": config},
    )
    table = pl.read_parquet(meta(result, "eval_sets")["eval_path"])
    assert table["eval_set"].unique().to_list() == ["mc"]
    config["eval_sets"]["config"]["out_of_domain"] = True
    config["eval_sets"]["config"]["ood_per_family"] = 3
    result = dg.materialize(
        [raw_dataset, eval_sets],
        resources=make_resources(str(tmp_path / "art2")),
        run_config={"ops": config},
    )
    table = pl.read_parquet(meta(result, "eval_sets")["eval_path"])
    assert dict(table.group_by("domain").len().iter_rows()) == {"external": 48, "out_of_domain": 12}
