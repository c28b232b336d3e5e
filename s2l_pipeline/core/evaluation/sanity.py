"""Checks that make an evaluation number mean something: the scorer accepts the references,
the model does not answer one string to everything, and accuracy is read against a floor."""

from __future__ import annotations

import re

import polars as pl

from .answer_types import REASONING_GYM, options_in, predicted_answer
from .scorers import is_correct


def modal_answers(train: pl.DataFrame) -> dict[str, str]:
    """The most common answer of each training source (ties: the smallest): the floor of the
    sets drawn from that source."""
    out = {}
    for (source,), part in train.group_by("source", maintain_order=True):
        if (mode := _mode(part)) is not None:
            out[source] = mode
    return dict(sorted(out.items()))


def answer_floor(table: pl.DataFrame, modes: dict[str, str]) -> pl.DataFrame:
    """Per answer-scored set: the accuracy of always giving one answer. For a set whose source
    was trained on, the most common training answer of that source; for any other set (a test
    file, an out-of-domain family), the set's own most common reference answer: the majority
    baseline, which is what a constant guess can reach there (always 'A' on a four-option set)."""
    out = []
    math = table.filter(pl.col("task") == "math")
    for (name,), part in math.group_by("eval_set", maintain_order=True):
        source = part["source"][0]
        answer, basis = modes.get(source), "training"
        if answer is None:
            answer, basis = _mode(part), "set"
        if answer is None:
            continue
        hits = sum(is_correct(r, answer) for r in part.iter_rows(named=True))
        out.append(
            {
                "eval_set": name,
                "floor_answer": answer,
                "floor_basis": basis,
                "floor_accuracy": hits / part.height,
            }
        )
    schema = {
        "eval_set": pl.String,
        "floor_answer": pl.String,
        "floor_basis": pl.String,
        "floor_accuracy": pl.Float64,
    }
    return pl.DataFrame(out, schema=schema)


def _mode(rows: pl.DataFrame) -> str | None:
    """The most common non-empty answer of ``rows`` (ties: the smallest); None if none."""
    given = rows.filter(pl.col("answer").is_not_null() & (pl.col("answer").str.len_chars() > 0))
    if given.is_empty():
        return None
    counts = given.group_by("answer").len().sort(["len", "answer"], descending=[True, False])
    return counts["answer"][0]


def prediction_modes(preds: pl.DataFrame) -> pl.DataFrame:
    """Per set: its most common prediction and the share of rows that gave it. Answer-scored
    sets compare the answers read from the generations (a model that ends every rationale with
    'Answer: A' has collapsed too); summaries compare the whole text."""
    answers = [
        _read_answer(r) if r.get("task") == "math" and r.get("answer_type") else r["prediction"]
        for r in preds.iter_rows(named=True)
    ]
    stripped = preds.with_columns(_p=pl.Series(answers, dtype=pl.String).str.strip_chars())
    counts = stripped.group_by("eval_set", "_p").len("n")
    totals = stripped.group_by("eval_set").len("rows")
    top = (
        counts.sort(["eval_set", "n", "_p"], descending=[False, True, False])
        .group_by("eval_set", maintain_order=True)
        .first()
    )
    return (
        top.join(totals, on="eval_set")
        .select(
            "eval_set",
            "rows",
            modal_prediction=pl.col("_p"),
            modal_share=pl.col("n") / pl.col("rows"),
        )
        .sort("eval_set")
    )


def _read_answer(row: dict) -> str:
    """The answer a generation gives, as its set's answer type reads it."""
    kind = row["answer_type"]
    if kind == REASONING_GYM:  # the family's scorer reads the first line
        lines = (row["prediction"] or "").strip().splitlines()
        return lines[0] if lines else ""
    return predicted_answer(kind, row["prediction"] or "")


# A rationale that mentions an answer or an option letter ("(C)", "C)", a lone "D", "answer"):
# when the reader finds no letter there, the reader missed it; otherwise none is stated.
_STATES_AN_ANSWER = re.compile(r"\(([A-J])\)|\b[A-J]\)|\b[B-HJ]\b|\b(?i:answer|ans|option)\b")
# What a failing reference is, worst first: the reader read a wrong letter, missed a stated
# one, or the reference states none (a rationale without its letter).
MISS_KINDS = ("misread", "missed", "no answer stated")


def _miss_kind(row: dict) -> str:
    if row.get("answer_type") == "choice":
        read = predicted_answer("choice", row["response"] or "", None, options_in(row["prompt"]))
        if read:
            return "misread"
        return "missed" if _STATES_AN_ANSWER.search(row["response"] or "") else MISS_KINDS[2]
    return "misread"


def reference_accuracy(table: pl.DataFrame) -> tuple[dict[str, float], dict[str, list[dict]]]:
    """Each answer-scored set's reference responses scored as if a model had written them:
    (share judged correct per set, up to three failing rows per set, the reader's own misses
    before rows that state no answer: those hide nothing about the reader)."""
    shares: dict[str, float] = {}
    failing: dict[str, list[dict]] = {}
    math = table.filter(pl.col("task") == "math")
    for (name,), part in math.group_by("eval_set", maintain_order=True):
        rows = list(part.iter_rows(named=True))
        misses = [r for r in rows if not is_correct(r, r["response"])]
        shares[name] = 1.0 - len(misses) / len(rows)
        kinds = sorted(((MISS_KINDS.index(_miss_kind(r)), i) for i, r in enumerate(misses)))
        if misses:
            failing[name] = [
                {
                    "kind": MISS_KINDS[k],
                    "response_end": misses[i]["response"][-120:],
                    "answer": misses[i]["answer"],
                }
                for k, i in kinds[:3]
            ]
    return dict(sorted(shares.items())), failing


def summary_floor(table: pl.DataFrame, train: pl.DataFrame) -> dict[str, float]:
    """Per summarization set: the ROUGE-L of answering every row with the most common training
    response of its source (the set's own most common reference when none was trained on)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    out = {}
    for (name,), part in table.filter(pl.col("task") == "summarization").group_by("eval_set"):
        pool = train.filter(pl.col("source") == part["source"][0])
        pool = pool if pool.height else part
        counts = pool.group_by("response").len().sort(["len", "response"], descending=[True, False])
        constant = counts["response"][0]
        scores = [scorer.score(r, constant)["rougeL"].fmeasure for r in part["response"]]
        out[name] = sum(scores) / len(scores)
    return dict(sorted(out.items()))


def collapsed_sets(preds: pl.DataFrame, table: pl.DataFrame) -> dict[str, tuple[str, float]]:
    """Sets where one prediction covers more than half the rows and more than the most common
    reference does (a collapsed model, not a set with one common answer): set -> (that
    prediction, its share)."""
    refs = table.select("eval_set", "task", "answer_type", prediction=pl.col("response"))
    ref_share = dict(prediction_modes(refs).select("eval_set", "modal_share").iter_rows())
    return {
        r["eval_set"]: (r["modal_prediction"], float(r["modal_share"]))
        for r in prediction_modes(preds).iter_rows(named=True)
        if r["modal_share"] > max(0.5, ref_share.get(r["eval_set"], 0.0))
    }
