"""Checks that make an evaluation number mean something: the scorer accepts the references,
the model does not answer one string to everything, and accuracy is read against a floor."""

from __future__ import annotations

import polars as pl

from .scorers import is_correct

ANY_SOURCE = "*"  # key of the modal answer over all training rows


def modal_answers(train: pl.DataFrame) -> dict[str, str]:
    """The most common answer of each training source, and over all rows (ties: the smallest)."""
    rows = train.filter(pl.col("answer").is_not_null() & (pl.col("answer").str.len_chars() > 0))
    if rows.is_empty():
        return {}

    def mode(df: pl.DataFrame) -> str:
        counts = df.group_by("answer").len().sort(["len", "answer"], descending=[True, False])
        return counts["answer"][0]

    out = {ANY_SOURCE: mode(rows)}
    for (source,), part in rows.group_by("source", maintain_order=True):
        out[source] = mode(part)
    return dict(sorted(out.items()))


def answer_floor(table: pl.DataFrame, modes: dict[str, str]) -> pl.DataFrame:
    """Per answer-scored set: the accuracy of always giving the most common training answer
    (the set's own source's when it trained on it, else the most common overall)."""
    out = []
    math = table.filter(pl.col("task") == "math")
    for (name,), part in math.group_by("eval_set", maintain_order=True):
        source = part["source"][0]
        answer = modes.get(source) or modes.get(ANY_SOURCE)
        if answer is None:
            continue
        hits = sum(is_correct(r, answer) for r in part.iter_rows(named=True))
        out.append({"eval_set": name, "floor_answer": answer, "floor_accuracy": hits / part.height})
    schema = {"eval_set": pl.String, "floor_answer": pl.String, "floor_accuracy": pl.Float64}
    return pl.DataFrame(out, schema=schema)


def prediction_modes(preds: pl.DataFrame) -> pl.DataFrame:
    """Per set: its most common prediction (stripped) and the share of rows that gave it."""
    stripped = preds.with_columns(_p=pl.col("prediction").str.strip_chars())
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


def reference_accuracy(table: pl.DataFrame) -> tuple[dict[str, float], dict[str, list[dict]]]:
    """Each answer-scored set's reference responses scored as if a model had written them:
    (share judged correct per set, up to three failing rows per set)."""
    shares: dict[str, float] = {}
    failing: dict[str, list[dict]] = {}
    math = table.filter(pl.col("task") == "math")
    for (name,), part in math.group_by("eval_set", maintain_order=True):
        rows = list(part.iter_rows(named=True))
        misses = [r for r in rows if not is_correct(r, r["response"])]
        shares[name] = 1.0 - len(misses) / len(rows)
        if misses:
            failing[name] = [
                {"response_end": r["response"][-120:], "answer": r["answer"]} for r in misses[:3]
            ]
    return dict(sorted(shares.items())), failing
