"""The primary endpoint and the collapse check, on tables built by hand."""

from __future__ import annotations

import polars as pl
import pytest

from s2l_pipeline.core.evaluation.endpoints import (
    collapse_answers,
    commonest_answers,
    off_mode_scores,
    top_prediction,
)


def test_commonest_answer_per_source_with_ties_broken_by_string() -> None:
    pool = pl.DataFrame(
        {
            "source": ["gcd"] * 5 + ["eq"] * 4,
            "answer": ["1", "1", "2", "1", "3", "7", "5", "5", "7"],
        }
    )
    assert commonest_answers(pool) == {"gcd": "1", "eq": "5"}
    # The pool's commonest ("1") is free on every family to a model that always says it.
    assert collapse_answers(pool) == {"gcd": ["1"], "eq": ["1", "5"]}


def test_off_mode_accuracy_drops_the_items_a_collapsed_model_gets_free() -> None:
    preds = pl.DataFrame(
        {
            "eval_set": ["gcd"] * 6 + ["eq"] * 2 + ["ood"] * 2,
            "answer": ["1", "1", "1", "2", "3", "2", "4", "9", "x", "y"],
            "prediction": ["1"] * 6 + ["4", "4", "x", "x"],
            "correct": [True, True, True, False, False, False, True, False, True, False],
        }
    )
    scores = off_mode_scores(preds, {"gcd": ["1"], "eq": ["5"]})
    assert set(scores) == {"gcd", "eq"}  # sets without a pool mode are not scored
    # Plain accuracy on gcd is 0.5; the model only ever says "1": off the mode it gets nothing.
    assert scores["gcd"].accuracy == 0.0 and scores["gcd"].items == 3
    assert scores["gcd"].floor == pytest.approx(2 / 3)  # "2" answers two of the three kept
    assert scores["eq"].accuracy == 0.5 and scores["eq"].items == 2
    top = top_prediction(preds.filter(pl.col("eval_set") == "gcd"))
    assert (top.prediction, top.share, top.items) == ("1", 1.0, 6)
    assert top_prediction(preds).share == pytest.approx(0.6)


def test_top_prediction_reads_the_first_line_per_family() -> None:
    from s2l_pipeline.core.evaluation.endpoints import top_predictions

    preds = pl.DataFrame(
        {
            "eval_set": ["gcd"] * 4 + ["eq"] * 4,
            "prediction": [" 1\nmore", "1", "1 ", "2", "5", "6", "7", "8"],
        }
    )
    tops = top_predictions(preds)
    # gcd collapsed to "1" (read as the scorer reads it); eq did not.
    assert (tops["gcd"].prediction, tops["gcd"].share) == ("1", 0.75)
    assert tops["eq"].share == 0.25


def test_a_mixture_can_leave_out_another_draws_problems() -> None:
    """The study's base pretrains without posing any study problem; basic_arithmetic's sums
    are chain_sum's problems, so without the exclusion they overlap (the check can fail)."""
    from s2l_pipeline.core.data.generator import (
        FAMILIES_BY_NAME,
        Family,
        draw_distinct,
        generate_mixture,
        table_problem_keys,
    )

    chain = Family("chain_sum", 1.0, {**FAMILIES_BY_NAME["chain_sum"].kwargs, "max_terms": 2})
    study = frozenset(table_problem_keys(draw_distinct(chain, 300, 22)))
    arithmetic = (FAMILIES_BY_NAME["basic_arithmetic"],)
    plain, _ = generate_mixture(400, 0, 0, arithmetic, keep_metadata=True)
    assert table_problem_keys(plain) & study  # the overlap the exclusion exists for
    kept, _ = generate_mixture(400, 0, 0, arithmetic, exclude=study, keep_metadata=True)
    assert kept.height == 400 and not table_problem_keys(kept) & study
