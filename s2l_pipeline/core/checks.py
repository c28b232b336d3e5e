"""Integrity checks on tables, as plain findings the Dagster layer turns into asset checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass(frozen=True)
class Finding:
    passed: bool
    summary: str
    counts: dict[str, int] = field(default_factory=dict)


def check_training_table(df: pl.DataFrame) -> Finding:
    """example_id present and unique; prompt and response non-empty."""
    counts = {
        "null_ids": df["example_id"].null_count(),
        "duplicate_ids": df.height - df["example_id"].n_unique(),
        "empty_prompts": int((df["prompt"].str.strip_chars().str.len_chars() == 0).sum()),
        "empty_responses": int((df["response"].str.strip_chars().str.len_chars() == 0).sum()),
    }
    bad = {k: v for k, v in counts.items() if v}
    summary = "all rows valid" if not bad else ", ".join(f"{v} {k}" for k, v in bad.items())
    return Finding(not bad, summary, counts)


def check_contamination(train: pl.DataFrame, evals: pl.DataFrame) -> Finding:
    """Evaluation prompts that also appear verbatim in training, per evaluation set."""
    leaked = evals.join(train.select("prompt").unique(), on="prompt", how="semi")
    per_set = dict(leaked.group_by("eval_set").len().sort("eval_set").iter_rows())
    summary = (
        "no evaluation prompt appears in training"
        if not per_set
        else "evaluation prompts found in training: "
        + ", ".join(f"{k}: {v}" for k, v in per_set.items())
    )
    return Finding(not per_set, summary, {"leaked_rows": leaked.height, **per_set})
