"""The README's YAML is part of the product: every block is valid run config of the main job,
and the own-data example materializes for real on files shaped like the ones it names."""

import json
import re
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from .conftest import PROJECT_ROOT
from .helpers import make_resources, meta, new_rows, readme_commands

FIXTURES = Path(__file__).parent / "fixtures"


def readme_yaml_blocks() -> list[dict]:
    text = (PROJECT_ROOT / "README.md").read_text()
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]


def test_every_yaml_block_is_valid_run_config() -> None:
    from s2l_pipeline.core.study.spec import parse_spec
    from s2l_pipeline.definitions import defs

    blocks = readme_yaml_blocks()
    assert blocks, "the README shows run config"
    job = defs.resolve_job_def("s2l_job")
    study = defs.resolve_job_def("study_cells_job")
    for block in blocks:
        if "arms" in block:  # a study spec (test_study_spec.py runs it)
            parse_spec(block, "README")
            continue
        # The study's settings are run config of its cells' job; the rest of the main job's.
        target = study if set(block.get("ops", {})) == {"study_cells"} else job
        dg.validate_run_config(target, block)  # raises, naming the bad key, when invalid


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _write(path: Path, lines: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return str(path)


def _local_files(tmp: Path) -> dict[str, str]:
    """Each path the README names -> a local file of the same schema."""
    import datasets

    mc, rad = (
        _lines(FIXTURES / "multiple_choice_sample.jsonl"),
        _lines(FIXTURES / "radiology_sample.jsonl"),
    )
    hf_rows = [
        {"instruction": r["prompt"], "output": r["response"], "source": r["source"]}
        for r in new_rows(24, 7).iter_rows(named=True)
    ]
    hf_dir = tmp / "hf_mathinstruct"
    datasets.Dataset.from_list(hf_rows).save_to_disk(str(hf_dir))
    return {
        "/data/MathInstruct.json": str(FIXTURES / "mathinstruct_sample.json"),
        "/data/gsm8k/train.jsonl": str(FIXTURES / "gsm8k_train_sample.jsonl"),
        "/data/AQuA/train.json": _write(tmp / "aqua/train.json", mc[:24]),
        "/data/radiology/train.jsonl": _write(tmp / "radiology/train.jsonl", rad[:6]),
        "TIGER-Lab/MathInstruct": str(hf_dir),
        "/data/gsm8k/test.jsonl": str(FIXTURES / "gsm8k_test_sample.jsonl"),
        "/data/math500/test.jsonl": str(FIXTURES / "math500_sample.jsonl"),
        "/data/AQuA/test.json": _write(tmp / "aqua/test.json", mc[24:]),
        "/data/radiology/test.jsonl": _write(tmp / "radiology/test.jsonl", rad[6:]),
        "/data/chats/sharegpt.json": _sharegpt(tmp / "chats/sharegpt.json"),
    }


def _sharegpt(path: Path) -> str:
    """GSM8K train rows the other fixtures do not use, as one ShareGPT JSON array."""
    rows = [json.loads(line) for line in _lines(FIXTURES / "gsm8k_train_sample.jsonl")[12:]]
    convs = [
        {
            "id": f"sg-{i}",
            "conversations": [
                {"from": "human", "value": r["question"]},
                {"from": "gpt", "value": r["answer"]},
            ],
        }
        for i, r in enumerate(rows)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(convs))
    return str(path)


@pytest.mark.slow
def test_own_data_example_materializes(tmp_path: Path) -> None:
    from s2l_pipeline.definitions import CHECKS, defs

    [example] = [b for b in readme_yaml_blocks() if "raw_dataset" in b.get("ops", {})]
    local = _local_files(tmp_path)
    text = json.dumps(example)
    for named, path in local.items():
        assert f'"{named}"' in text, f"the README no longer names {named}"
        text = text.replace(f'"{named}"', json.dumps(path))
    config = json.loads(text)
    # the data end of the graph, and the proxy whose max_length the example sets
    assets = ("raw_dataset", "eval_sets", "proxy_checkpoints")
    config["ops"] = {k: v for k, v in config["ops"].items() if k in assets}
    data_assets = [defs.get_assets_def(k) for k in assets]
    data_checks = [
        c
        for c in CHECKS
        if {k.asset_key.path[0] for k in c.check_keys} <= {"raw_dataset", "eval_sets"}
    ]
    result = dg.materialize(
        [*data_assets, *data_checks],
        resources=make_resources(str(tmp_path / "art")),
        run_config=config,
    )
    assert result.success
    assert meta(result, "proxy_checkpoints")["n_truncated"] < 3
    raw = meta(result, "raw_dataset")
    assert raw["rejected_rows"] == 0
    rows = raw["rows_per_source"]
    for source in ("aqua", "gsm8k", "radiology_train", "sharegpt"):
        assert f"| {source} |" in rows, rows
    table = pl.read_parquet(meta(result, "eval_sets")["eval_path"])
    scoring = dict(
        table.group_by("eval_set")
        .agg(pl.col("task").first(), pl.col("answer_type").first())
        .select(
            "eval_set", pl.concat_str("task", pl.col("answer_type").fill_null("-"), separator="/")
        )
        .iter_rows()
    )
    assert scoring["aqua_test"] == "math/choice"
    assert scoring["gsm8k_test"] == "math/number"
    assert scoring["math500"] == "math/math"
    assert scoring["radiology_test"] == "summarization/-"
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    refs = checks["references_score_as_correct"]
    assert refs.passed, refs.description
    shares = refs.metadata["reference_accuracy"].value
    assert set(shares) >= {"aqua_test", "gsm8k_test", "math500"} and "radiology_test" not in shares


def _run_readme_line(line: str, tmp_path: Path, local: dict[str, str], env: dict) -> dict:
    """One README command as written (its files mapped to local ones of the same schema), at
    the tiny scale so it takes seconds; returns its JSON summary."""
    import shlex
    import subprocess

    from .conftest import s2l_cmd

    argv = shlex.split(line)
    env_assign = [a for a in argv if "=" in a and a.split("=")[0].isupper()]
    argv = argv[argv.index(next(a for a in argv if a.endswith("/s2l"))) + 1 :]
    assert env_assign == ["DAGSTER_HOME=$PWD"]
    in_project = {a: str(PROJECT_ROOT / a) for a in argv if (PROJECT_ROOT / a).is_file()}
    argv = [local.get(a) or in_project.get(a, a) for a in argv]
    assert str(tmp_path) in " ".join(argv) or in_project, "the README's files were all mapped"
    res = subprocess.run(
        [*s2l_cmd(), *argv, "--profile", "tiny"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_one_command_examples_run(tmp_path: Path) -> None:
    """Every `s2l run --data` command of the README, run as written."""
    import shlex
    import shutil
    import subprocess

    from .conftest import s2l_cmd, s2l_env

    local = _local_files(tmp_path / "files")
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = s2l_env(tmp_path, profile=None)
    aqua, chat = readme_commands("s2l run --data")
    summary = _run_readme_line(chat, tmp_path, local, env)
    assert summary["examples"] == 12
    assert summary["metric_by_set"] == {"fixtures_sharegpt_sample": "ROUGE-L"}

    summary = _run_readme_line(aqua, tmp_path, local, env)
    assert summary["examples"] == 24
    assert summary["metric_by_set"] == {"aqua_test": "accuracy (choice)"}
    assert "external_floor_accuracy" in summary and "out_of_domain_accuracy" not in summary

    # ... then the README's export commands, as written, in the same project folder
    exports = readme_commands("s2l export")
    assert len(exports) == 2
    for line in exports:
        argv = shlex.split(line.split("#")[0])
        argv = argv[argv.index(next(a for a in argv if a.endswith("/s2l"))) + 1 :]
        res = subprocess.run(
            [*s2l_cmd(), *argv], capture_output=True, text=True, cwd=tmp_path, env=env
        )
        assert res.returncode == 0, res.stderr[-2000:]
    done = tmp_path / "my_subset"
    manifest = json.loads((done / "manifest.json").read_text())
    assert manifest["format"] == "parquet" and manifest["rows"] == 7  # floor(0.3 x 24)
    assert (done / "subset.jsonl").exists() and (done / "subset.parquet").exists()
    records = pl.read_parquet(done / "subset.parquet")
    assert {"question", "options", "rationale", "correct", "record_id"} <= set(records.columns)


def _seconds(measured: str) -> int:
    """'6 min 36 s', '23 s', '19 min 42 s' -> seconds."""
    m = re.fullmatch(r"(?:(\d+) min)?\s*(?:(\d+) s)?", measured.strip())
    assert m and any(m.groups()), f"not a time: {measured!r}"
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def test_readme_times_are_the_measured_ones() -> None:
    """Every time the README states is in docs/benchmarks.md's table of measurements, and says
    that measurement rounded (to the minute; to 10 seconds under a minute)."""
    docs = (PROJECT_ROOT / "docs" / "benchmarks.md").read_text()
    section = docs.split("## The README's times", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| `")]
    assert len(rows) >= 4
    readme = " ".join((PROJECT_ROOT / "README.md").read_text().split())
    for row in rows:
        phrase, _, measured = [c.strip() for c in row.strip("|").split("|")][:3]
        phrase = phrase.strip("`")
        assert phrase in readme, f"the README no longer says {phrase!r}"
        said = re.search(r"(\d+) (minute|second)", phrase)
        seconds = _seconds(measured)
        if said.group(2) == "minute":
            assert int(said.group(1)) == round(seconds / 60), (phrase, measured)
        else:
            assert int(said.group(1)) == 10 * round(seconds / 10), (phrase, measured)
