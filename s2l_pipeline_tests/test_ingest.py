"""Loaders, schemas and the rejection rules of the core data layer."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from s2l_pipeline.core.data.formats import FORMATS, UnknownSchemaError
from s2l_pipeline.core.data.ingest import (
    DatasetSpec,
    FileSource,
    HFSource,
    TooManyRejected,
    check_rejections,
    load_dataset,
)
from s2l_pipeline.core.data.readers import FileReadError
from s2l_pipeline.core.data.schema import RAW_SCHEMA, REJECTED_SCHEMA

from .conftest import FIXTURES
from .helpers import AQUA, AQUA_FIELDS


def files_only(*sources: FileSource, **kw) -> DatasetSpec:
    return DatasetSpec(embedded=None, files=sources, **kw)


def _lines(name: str) -> list[dict]:
    return [json.loads(x) for x in (FIXTURES / name).read_text().splitlines()]


def test_gsm8k_file_is_detected_and_normalized() -> None:
    out = load_dataset(files_only(FileSource(str(FIXTURES / "gsm8k_train_sample.jsonl"))))
    raw = _lines("gsm8k_train_sample.jsonl")
    assert out.train.schema == pl.Schema(RAW_SCHEMA)
    assert out.train.height == len(raw) and out.rejected.height == 0
    first = out.train.row(0, named=True)
    assert first["prompt"] == raw[0]["question"] and first["response"] == raw[0]["answer"]
    assert first["answer"] == raw[0]["answer"].split("####")[-1].strip()
    assert set(out.train["source"]) == {"gsm8k"} and set(out.train["task"]) == {"math"}
    assert out.train["example_id"].n_unique() == out.train.height


def test_math_file_keeps_given_answer() -> None:
    out = load_dataset(files_only(FileSource(str(FIXTURES / "math500_sample.jsonl"))))
    raw = _lines("math500_sample.jsonl")
    assert out.train["answer"].to_list() == [r["answer"] for r in raw]
    assert out.train["response"].to_list() == [r["solution"] for r in raw]


def test_mathinstruct_jsonl_keeps_record_sources_and_joins_input() -> None:
    out = load_dataset(files_only(FileSource(str(FIXTURES / "mathinstruct_sample.jsonl"))))
    raw = _lines("mathinstruct_sample.jsonl")
    assert out.train["source"].to_list() == [r["source"] for r in raw]
    with_input = out.train.filter(pl.col("source") == "data/CoT/math50k_camel.json").row(
        0, named=True
    )
    assert with_input["prompt"] == "Solve for x.\n\n2x + 6 = 14"
    assert with_input["answer"] == "4"
    answers = dict(zip(out.train["prompt"], out.train["answer"], strict=True))
    assert answers["A box holds 12 pens. How many pens are in 5 boxes?"] == "60"
    assert answers[raw[2]["instruction"]] is None  # a program has no final answer to extract


def test_json_array_and_source_override() -> None:
    out = load_dataset(
        files_only(FileSource(str(FIXTURES / "mathinstruct_sample.json"), source="mi"))
    )
    assert out.train.height == 5 and set(out.train["source"]) == {"mi"}


def test_json_object_holding_one_list(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": _lines("gsm8k_test_sample.jsonl")[:3]}))
    assert load_dataset(files_only(FileSource(str(path)))).train.height == 3


def test_radiology_is_summarization() -> None:
    out = load_dataset(files_only(FileSource(str(FIXTURES / "radiology_sample.jsonl"))))
    raw = _lines("radiology_sample.jsonl")
    assert out.train["prompt"].to_list() == [r["findings"] for r in raw]
    assert out.train["response"].to_list() == [r["impression"] for r in raw]
    assert set(out.train["task"]) == {"summarization"} and out.train["answer"].null_count() == 12


def test_parquet_input_with_line_numbers(tmp_path: Path) -> None:
    rows = _lines("gsm8k_test_sample.jsonl")[:5]
    rows[3]["answer"] = ""
    path = tmp_path / "gsm.parquet"
    pl.DataFrame(rows).write_parquet(path)
    out = load_dataset(files_only(FileSource(str(path))))
    assert out.train.height == 4
    assert out.rejected.select("line", "field", "reason").row(0) == (
        4,
        "answer",
        "field 'answer' is empty",
    )


def test_named_format_overrides_detection(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"findings": "x", "impression": "y", "question": "q"}) + "\n")
    out = load_dataset(files_only(FileSource(str(path), format="radiology")))
    assert out.train["prompt"].to_list() == ["x"]
    with pytest.raises(UnknownSchemaError, match="unknown format 'csv'"):
        load_dataset(files_only(FileSource(str(path), format="csv")))


def test_a_table_in_the_products_own_schema_reads_back(tmp_path: Path) -> None:
    """Its null ``messages`` column does not make it a chat file: prompt, response, answer
    and source come through as written."""
    rows = [{"example_id": f"e{i}", "source": "gcd", "prompt": f"gcd of {i} and 4?",
             "response": "2", "answer": "2", "task": "math", "messages": None,
             "metadata": None} for i in range(3)]  # fmt: skip
    path = tmp_path / "pool.parquet"
    pl.DataFrame(rows, schema=RAW_SCHEMA).write_parquet(path)
    out = load_dataset(files_only(FileSource(str(path))))
    assert out.rejected.is_empty() and out.train.height == 3
    assert out.train["source"].unique().to_list() == ["gcd"]
    assert out.train["answer"].to_list() == ["2"] * 3


def test_bad_rows_are_rejected_with_file_line_field_and_reason() -> None:
    path = str(FIXTURES / "bad_rows.jsonl")
    out = load_dataset(files_only(FileSource(path), duplicates="reject"))
    rej = out.rejected.sort("line")
    assert rej.schema == pl.Schema(REJECTED_SCHEMA)
    got = [(r["line"], r["field"], r["reason"].split(" (")[0]) for r in rej.iter_rows(named=True)]
    assert got == [
        (3, None, "undecodable line: invalid JSON"),
        (4, "answer", "missing field 'answer'"),
        (5, "question", "field 'question' is not a string"),
        (6, "answer", "field 'answer' is empty"),
        (7, None, f"duplicate example: same prompt and response as {path}:1"),
        (10, None, "undecodable line: not UTF-8"),
        (11, None, "undecodable line: a JSON list, not an object"),
    ]
    assert set(rej["file"]) == {path}
    assert "#### 4" in rej.filter(pl.col("line") == 3)["raw"][0]  # raw text kept
    # Nothing is lost: every non-blank line is either accepted or rejected.
    non_blank = sum(1 for x in Path(path).read_bytes().splitlines() if x.strip())
    assert out.train.height + out.rejected.height == non_blank == 10
    assert out.train.height == 3


def test_rejected_share_threshold() -> None:
    out = load_dataset(
        files_only(FileSource(str(FIXTURES / "bad_rows.jsonl")), duplicates="reject")
    )
    assert out.rejected_share == pytest.approx(7 / 10)
    with pytest.raises(TooManyRejected) as err:
        check_rejections(out, 0.01, "/tmp/rejected.parquet")
    msg = str(err.value)
    assert "7 of 10 rows rejected (70.00%)" in msg and "/tmp/rejected.parquet" in msg
    assert "bad_rows.jsonl (first at line 3)" in msg
    check_rejections(out, 0.75)  # under the threshold: no error


def test_duplicates_across_files_keep_the_first() -> None:
    a = FileSource(str(FIXTURES / "gsm8k_train_sample.jsonl"))
    out = load_dataset(files_only(a, a, duplicates="reject"))
    assert out.train.height == 20 and out.rejected.height == 20
    assert out.rejected["reason"].str.starts_with("duplicate example").all()


def test_unknown_schema_fails_naming_file_and_supported(tmp_path: Path) -> None:
    path = tmp_path / "weird.jsonl"
    path.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(UnknownSchemaError) as err:
        load_dataset(files_only(FileSource(str(path))))
    msg = str(err.value)
    assert str(path) in msg and "fields seen: ['text']" in msg
    for name in FORMATS:
        assert name in msg


@pytest.mark.parametrize(
    "content,name",
    [
        (b"\x00\x01garbage", "blob.bin"),
        (b"[{not json", "broken.json"),
        (b"PAR1 not really", "fake.parquet"),
    ],
)
def test_unreadable_file_fails_at_once(tmp_path: Path, content: bytes, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FileReadError, match=str(path)):
        load_dataset(files_only(FileSource(str(path))))


def test_missing_file_fails_naming_it() -> None:
    with pytest.raises(FileReadError, match="nope.jsonl"):
        load_dataset(files_only(FileSource("/no/such/nope.jsonl")))


def test_folder_of_shards(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "gsm8k_train_sample.jsonl", tmp_path / "part-0.jsonl")
    shutil.copy(FIXTURES / "gsm8k_test_sample.jsonl", tmp_path / "part-1.jsonl")
    (tmp_path / "notes.txt").write_text("ignored: not a data file")
    out = load_dataset(files_only(FileSource(str(tmp_path))))
    assert out.train.height == 40


def test_heldout_per_source_is_carved_and_stable() -> None:
    spec = files_only(
        FileSource(str(FIXTURES / "gsm8k_train_sample.jsonl")),
        FileSource(str(FIXTURES / "math500_sample.jsonl")),
        heldout_per_source=4,
        heldout_share=0.2,
    )
    a, b = load_dataset(spec), load_dataset(spec)
    assert a.heldout.group_by("eval_set").len().sort("eval_set").rows() == [
        ("gsm8k", 4),
        ("math", 4),
    ]
    assert set(a.heldout["example_id"]).isdisjoint(a.train["example_id"])
    assert a.train.height == 32 and a.heldout.equals(b.heldout)
    assert set(a.heldout["domain"]) == {"in_domain"}


def test_hf_local_dataset_folder_and_save_to_disk(tmp_path: Path) -> None:
    import datasets

    rows = _lines("gsm8k_train_sample.jsonl")
    folder = tmp_path / "hub_like"
    folder.mkdir()
    pl.DataFrame(rows).write_parquet(folder / "train.parquet")
    out = load_dataset(DatasetSpec(embedded=None, hf=(HFSource(str(folder)),)))
    assert out.train.height == 20 and set(out.train["source"]) == {"gsm8k"}

    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:7])}).save_to_disk(saved)
    out = load_dataset(DatasetSpec(embedded=None, hf=(HFSource(str(saved), source="g"),)))
    assert out.train.height == 7 and set(out.train["source"]) == {"g"}


def test_hf_unknown_name_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileReadError, match=r"hf:.*missing_ds\[train\]: cannot load"):
        load_dataset(DatasetSpec(embedded=None, hf=(HFSource(str(tmp_path / "missing_ds")),)))


def test_s3_files_through_a_real_s3_server(s3_endpoint: str, s3_bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for name in ("gsm8k_train_sample.jsonl", "bad_rows.jsonl"):
        client.upload_file(str(FIXTURES / name), s3_bucket, f"raw/{name}")
    one = load_dataset(
        files_only(FileSource(f"s3://{s3_bucket}/raw/gsm8k_train_sample.jsonl")), s3_endpoint
    )
    assert one.train.height == 20
    both = load_dataset(
        files_only(FileSource(f"s3://{s3_bucket}/raw/"), duplicates="reject"), s3_endpoint
    )
    # bad_rows.jsonl sorts first; its 3 good rows are gsm8k lines 1-3, which become duplicates.
    bad_uri, gsm_uri = (f"s3://{s3_bucket}/raw/{n}" for n in ("bad_rows", "gsm8k_train_sample"))
    assert both.train.height == 20
    dups = both.rejected.filter(pl.col("reason").str.starts_with("duplicate"))
    assert dups.select("file", "line").rows() == [(f"{bad_uri}.jsonl", 7)] + [
        (f"{gsm_uri}.jsonl", i) for i in (1, 2, 3)
    ]
    assert dups["reason"].str.contains(f"{bad_uri}.jsonl:1 ", literal=True).sum() == 2
    assert both.rejected.height == 7 + 3
    with pytest.raises(FileReadError, match="missing.jsonl"):
        load_dataset(files_only(FileSource(f"s3://{s3_bucket}/missing.jsonl")), s3_endpoint)


def test_empty_file_in_a_folder_is_skipped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(FIXTURES / "gsm8k_train_sample.jsonl", folder / "a.jsonl")
    (folder / "b.jsonl").write_text("")
    (folder / "c.jsonl").write_text("\n\n")
    out = load_dataset(files_only(FileSource(str(folder))))
    assert out.train.height == len(_lines("gsm8k_train_sample.jsonl"))
    assert out.empty_files == [str(folder / "b.jsonl"), str(folder / "c.jsonl")]
    assert out.rejected.height == 0


def test_any_schema_through_a_field_mapping(tmp_path: Path) -> None:
    """AQuA-RAT: JSON Lines in a file named .json, list-valued options, mapped by templates."""
    path = tmp_path / "aqua_train.json"
    path.write_text("\n".join(json.dumps(r) for r in AQUA) + "\n")
    out = load_dataset(files_only(FileSource(str(path), source="aqua", fields=AQUA_FIELDS)))
    assert out.train.height == 2
    first = out.train.row(0, named=True)
    assert first["prompt"] == AQUA[0]["question"] + "\nOptions: A)1, B)2, C)3"
    assert first["response"] == AQUA[0]["rationale"] and first["answer"] == "A"
    assert first["source"] == "aqua" and first["task"] == "math"
    [bad] = out.rejected.iter_rows(named=True)
    assert bad["line"] == 3 and bad["field"] == "rationale"
    assert "missing field 'rationale' (used by the response template)" in bad["reason"]

    with pytest.raises(UnknownSchemaError, match="needs prompt and response"):
        load_dataset(files_only(FileSource(str(path), fields={"prompt": "{question}"})))


def test_byte_order_marks_and_crlf_are_tolerated(tmp_path: Path) -> None:
    rows = _lines("gsm8k_train_sample.jsonl")
    array = tmp_path / "bom_array.json"
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    lines = tmp_path / "bom_crlf.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(r) for r in rows).encode() + b"\r\n")
    no_suffix = tmp_path / "bom_lines"
    no_suffix.write_bytes(lines.read_bytes())
    for path in (array, lines, no_suffix):
        out = load_dataset(files_only(FileSource(str(path))))
        assert out.train.height == len(rows) and out.rejected.height == 0, path
        assert out.train["prompt"][0] == rows[0]["question"]


def test_duplicates_reject_or_drop(tmp_path: Path) -> None:
    """Templated reports repeat: 'reject' fails with totals per reason and the settings to
    change; 'drop' drops them, counts them apart and keeps them."""
    rows = [json.loads(x) for x in (FIXTURES / "radiology_sample.jsonl").read_text().splitlines()]
    path = tmp_path / "reports.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows + rows[:5] + rows[:5]) + "\n")
    rejecting = load_dataset(files_only(FileSource(str(path)), duplicates="reject"))
    assert rejecting.rejected.height == 10
    with pytest.raises(TooManyRejected) as err:
        check_rejections(rejecting, 0.01)
    text = str(err.value)
    assert "By reason: duplicate example 10" in text
    assert "max_rejected_share (now 0.01; raw_dataset's config" in text
    assert "s2l run --duplicates drop, or duplicates: drop in raw_dataset's config" in text

    dropping = load_dataset(files_only(FileSource(str(path))))  # the default
    assert dropping.train.height == len(rows) and dropping.rejected.height == 0
    assert dropping.duplicates.height == 10 and dropping.rows_seen == len(rows) + 10
    check_rejections(dropping, 0.01)  # nothing counted as rejected


def test_heldout_is_a_capped_share_and_keeps_a_prompt_on_one_side(tmp_path: Path) -> None:
    """200 problems asked of 254 hold out 26 (10%, rounded up), not 127; a prompt asked twice
    with two responses, in other case and spacing, is held out whole or not at all."""
    rows = [
        {"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}. #### {2 * i}"}
        for i in range(254)
    ]
    rows += [
        {"question": f"WHAT is  {i} plus {i}?", "answer": f"Twice {i}. #### {2 * i}"}
        for i in range(254)
    ]
    path = tmp_path / "asked_twice.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = load_dataset(files_only(FileSource(str(path)), heldout_per_source=200))
    held = out.heldout["prompt"].str.to_lowercase().str.replace_all(" +", " ")
    trained = out.train["prompt"].str.to_lowercase().str.replace_all(" +", " ")
    assert out.heldout.height == 2 * 26  # 26 problems, both askings of each
    assert set(held).isdisjoint(set(trained))
    assert out.train.height + out.heldout.height == 508


def test_a_file_that_is_not_utf8_says_so_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"question": "Caf\u00e9?", "answer": "#### 1"}\n'.encode("latin-1") * 3)
    with pytest.raises(UnknownSchemaError) as err:
        load_dataset(files_only(FileSource(str(path))))
    text = str(err.value)
    assert f"{path}: line 1: undecodable line: not UTF-8" in text and "save it as UTF-8" in text
    assert "unknown schema" not in text


def test_unknown_schema_shows_a_fields_flag_built_from_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "reports.jsonl"
    path.write_text(json.dumps({"notes": "Clear lungs.", "summary": "Normal."}) + "\n")
    with pytest.raises(UnknownSchemaError) as err:
        load_dataset(files_only(FileSource(str(path))))
    text = str(err.value)
    assert "fields seen: ['notes', 'summary']" in text
    assert """--fields '{"prompt": "{notes}", "response": "{summary}"}'""" in text
    assert "--eval-fields for an evaluation file" in text


def test_a_file_reached_through_dot_dot_is_named_by_its_folder(tmp_path: Path, monkeypatch) -> None:
    """`s2l run --eval ../test.jsonl` named the set '.._test', and MLflow refused its metric
    '.._test.accuracy' after the whole run had trained: the folder reached is the name."""
    from s2l_pipeline.core.data.ingest import file_label

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path / "runs")
    assert file_label("../test.jsonl") == f"{tmp_path.name}_test"
    assert file_label("data/gsm8k/test.jsonl") == "gsm8k_test"
    assert file_label("test.jsonl") == "test"
    assert file_label("s3://bucket/gsm8k/test.jsonl") == "gsm8k_test"
