"""Evaluation sets: held-out, out-of-domain, and test files by path."""

import polars as pl
import pytest

from s2l_pipeline.core.data.eval_sets import EvalFile, build_eval_sets, load_eval_file
from s2l_pipeline.core.data.schema import EVAL_SCHEMA

from .conftest import FIXTURES, SHARED_DATA


def test_eval_files_and_ood_in_one_table() -> None:
    empty = pl.DataFrame(schema=EVAL_SCHEMA)
    files = (
        EvalFile(str(FIXTURES / "gsm8k_test_sample.jsonl"), name="gsm8k_test"),
        EvalFile(str(FIXTURES / "math500_sample.jsonl")),
        EvalFile(str(FIXTURES / "radiology_sample.jsonl"), name="radiology"),
    )
    table, rejected = build_eval_sets(empty, 5, 0, files)
    sets = dict(table.group_by("eval_set").len().iter_rows())
    assert sets["gsm8k_test"] == 20 and sets["fixtures_math500_sample"] == 20
    assert sets["radiology"] == 12 and rejected.height == 0
    assert table.filter(pl.col("domain") == "out_of_domain").height == 5 * 4
    gsm = table.filter(pl.col("eval_set") == "gsm8k_test")
    assert gsm["answer"].null_count() == 0 and set(gsm["domain"]) == {"external"}
    rad = table.filter(pl.col("eval_set") == "radiology")
    assert set(rad["task"]) == {"summarization"}


def test_same_name_twice_is_an_error() -> None:
    path = str(FIXTURES / "gsm8k_test_sample.jsonl")
    with pytest.raises(ValueError, match="used twice"):
        build_eval_sets(pl.DataFrame(schema=EVAL_SCHEMA), 0, 0, (EvalFile(path), EvalFile(path)))


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the project")
@pytest.mark.parametrize("rel,rows", [("gsm8k/test.jsonl", 1319), ("math500/test.jsonl", 500)])
def test_full_gsm8k_test_and_math500_load(rel: str, rows: int) -> None:
    table, rejected = load_eval_file(EvalFile(str(SHARED_DATA / rel)))
    assert table.height == rows and rejected.height == 0
    assert table["answer"].null_count() == 0
    assert table["eval_set"][0] == rel.replace("/", "_").removesuffix(".jsonl")


def test_an_evaluation_file_never_vanishes(tmp_path) -> None:
    """All rows rejected, or more than max_rejected_share: an error naming the file."""
    from s2l_pipeline.core.data.ingest import TooManyRejected

    empty = pl.DataFrame(schema=EVAL_SCHEMA)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "no answer here"}\n{"question": 3, "answer": "1"}\n')
    with pytest.raises(TooManyRejected, match="2 of 2 rows rejected") as err:
        build_eval_sets(empty, 0, 0, (EvalFile(str(broken)),))
    assert str(broken) in str(err.value) and "max_rejected_share" in str(err.value)

    good = (FIXTURES / "gsm8k_test_sample.jsonl").read_text()
    mostly = tmp_path / "mostly.jsonl"
    mostly.write_text(good + '{"question": "q"}\n')  # 1 bad row of 21
    with pytest.raises(TooManyRejected, match="1 of 21 rows rejected"):
        build_eval_sets(empty, 0, 0, (EvalFile(str(mostly)),))
    table, rejected = build_eval_sets(empty, 0, 0, (EvalFile(str(mostly)),), None, 0.1)
    assert table.height == 20 and rejected.height == 1
