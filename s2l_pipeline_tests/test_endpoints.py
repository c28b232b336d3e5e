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
