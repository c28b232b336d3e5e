"""Answer extraction and scoring on real GSM8K / MATH-500 solutions and reasoning-gym items."""

import json

import polars as pl
import pytest

from s2l_pipeline.core.data.eval_sets import EvalFile, load_eval_file
from s2l_pipeline.core.data.generator import generate_ood
from s2l_pipeline.core.evaluation.scorers import (
    extract_answer,
    is_correct,
    math_correct,
    summarization_scores,
)

from .conftest import FIXTURES


@pytest.mark.parametrize("name", ["gsm8k_test_sample.jsonl", "math500_sample.jsonl"])
def test_reference_solutions_score_one_and_wrong_numbers_zero(name: str) -> None:
    table, _ = load_eval_file(EvalFile(str(FIXTURES / name)))
    for row in table.iter_rows(named=True):
        assert is_correct(row, row["response"]), (row["example_id"], row["answer"])
    wrong = 0
    for row in table.iter_rows(named=True):
        try:
            bad = str(int(float(row["answer"].replace(",", ""))) + 1)
        except ValueError:
            continue  # symbolic MATH answers: checked below
        wrong += 1
        assert not is_correct(row, f"The answer is {bad}"), row["answer"]
    assert wrong >= 5


def test_math_verify_equivalence() -> None:
    assert math_correct(r"so we get \boxed{\frac{1}{2}}", "0.5")
    assert math_correct("#### 1,200", "1200")
    assert not math_correct(r"\boxed{3}", r"\frac{1}{2}")
    assert extract_answer("Step 1: 3+4=7\nStep 2: 7*2=14 apples") == "14"
    assert extract_answer("42") == "42"


def test_reasoning_gym_rows_use_their_own_scorers() -> None:
    ood = generate_ood(5, seed=1)
    for row in ood.iter_rows(named=True):
        assert is_correct(row, row["answer"]), row["eval_set"]
        assert is_correct(row, row["answer"] + "\nextra text after the first line")
        assert not is_correct(row, "definitely wrong")
    meta = json.loads(ood["metadata"][0])
    assert meta  # the scorer's metadata round-trips through JSON


@pytest.mark.slow  # beyond the fast loop
def test_summarization_metrics_on_the_fixture() -> None:
    rows = pl.read_ndjson(FIXTURES / "radiology_sample.jsonl")
    refs = rows["impression"].to_list()
    perfect = summarization_scores(refs, refs)
    assert perfect["rougeL"] == pytest.approx(1.0) and perfect["bleu"] == pytest.approx(100.0)
    assert perfect["embedding_similarity"] == pytest.approx(1.0, abs=1e-4)
    shuffled = summarization_scores(refs[1:] + refs[:1], refs)
    assert shuffled["rougeL"] < 0.5 and shuffled["bleu"] < 30
    assert shuffled["embedding_similarity"] < perfect["embedding_similarity"]


def test_headline_reports_rouge_and_bleu_for_summarization_sets() -> None:
    import polars as pl

    from s2l_pipeline.core.evaluation.model_eval import headline

    metrics = pl.DataFrame(
        {
            "eval_set": ["gsm8k", "radiology"],
            "domain": ["external", "external"],
            "task": ["math", "summarization"],
            "accuracy": [0.25, None],
            "mean_nll": [1.0, 2.0],
            "rougeL": [None, 0.4],
            "bleu": [None, 12.0],
        }
    )
    heads = headline(metrics)
    assert heads["external_accuracy"] == 0.25 and heads["external_mean_nll"] == 1.0
    assert heads["external_summarization_rougeL"] == 0.4
    assert heads["external_summarization_bleu"] == 12.0


def test_lineage_lists_checkpoints_in_step_order() -> None:
    from s2l_pipeline.core.support.lineage import format_lineage

    text = format_lineage({"proxy": {"checkpoints": {"0": "a", "188": "c", "94": "b"}}})
    lines = [x.strip() for x in text.splitlines() if "checkpoints." in x]
    assert lines == ["checkpoints.0: a", "checkpoints.94: b", "checkpoints.188: c"]


def test_each_accuracy_is_said_against_its_floor() -> None:
    from s2l_pipeline.core.evaluation.model_eval import headline_in_words

    words = headline_in_words({
        "in_domain_accuracy": 0.41, "in_domain_floor_accuracy": 0.2,
        "out_of_domain_accuracy": 0.022, "out_of_domain_floor_accuracy": 0.204,
        "external_accuracy": 0.5,  # no floor: nothing to say
    })  # fmt: skip
    assert words == [
        "In-domain accuracy 0.410 is 21.0 points above its floor 0.200 (the training rows' "
        "commonest answer).",
        "Out-of-domain accuracy 0.022 is at or below its floor 0.204 (answering every item "
        "with the training rows' commonest answer): the target has not learned these sets, so "
        "this accuracy says nothing about the subset.",
    ]
    tie = headline_in_words({"in_domain_accuracy": 0.2, "in_domain_floor_accuracy": 0.2})
    assert "at or below" in tie[0]
