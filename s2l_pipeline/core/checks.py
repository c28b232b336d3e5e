"""Integrity checks on tables, as plain findings the Dagster layer turns into asset checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from .data.problem_identity import normalized_column


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


# A user turn this short ("Are you sure?", "Continue") is asked everywhere: it says nothing.
MIN_TURN_CHARS = 20


def _texts(df: pl.DataFrame, key: str | None = None) -> pl.DataFrame:
    """What a model reads of each row as separate texts (``prompt``): the prompt (a chat row's
    whole conversation before its reply) and, for chat rows, every user turn of
    ``MIN_TURN_CHARS`` or more; with ``key``, each text beside that column."""
    keep = [key] if key else []
    prompts = df.select(*keep, "prompt")
    if "messages" not in df.columns or df["messages"].null_count() == df.height:
        return prompts
    turn = pl.Struct({"role": pl.String, "content": pl.String})
    turns = (
        df.filter(pl.col("messages").is_not_null())
        .select(*keep, t=pl.col("messages").str.json_decode(pl.List(turn)))
        .explode("t")
        .unnest("t")
        .filter((pl.col("role") == "user") & (pl.col("content").str.len_chars() >= MIN_TURN_CHARS))
        .select(*keep, prompt=pl.col("content"))
    )
    return pl.concat([prompts, turns])


def check_contamination(train: pl.DataFrame, evals: pl.DataFrame) -> Finding:
    """Evaluation prompts that also appear in training, verbatim or once case and whitespace
    are folded, per evaluation set: on what the model reads, so a prompt asked as a user turn
    of a chat row counts, as does a chat evaluation item whose user turn was trained on."""
    evals = evals.with_row_index("_item")
    asked = _texts(evals, "_item")
    trained = _texts(train)
    hit = asked.join(trained.select("prompt").unique(), on="prompt", how="semi")["_item"]
    hit_folded = asked.with_columns(_k=normalized_column("prompt")).join(
        trained.select(_k=normalized_column("prompt")).unique(), on="_k", how="semi"
    )["_item"]
    leaked = evals.filter(pl.col("_item").is_in(hit.implode()))
    folded = evals.filter(pl.col("_item").is_in(hit_folded.implode()))
    per_set = dict(leaked.group_by("eval_set").len().sort("eval_set").iter_rows())
    per_set_folded = dict(folded.group_by("eval_set").len().sort("eval_set").iter_rows())
    found = ", ".join(
        f"{k}: {per_set.get(k, 0)} verbatim, {v} normalized" for k, v in per_set_folded.items()
    )
    summary = (
        "no evaluation prompt appears in training (verbatim or with case and whitespace folded)"
        if not per_set_folded
        else f"evaluation prompts found in training: {found}"
    )
    counts = {
        "leaked_rows": leaked.height,
        "leaked_rows_normalized": folded.height,
        **{f"{k}_normalized": v for k, v in per_set_folded.items()},
        **per_set,
    }
    return Finding(not per_set_folded, summary, counts)


def check_trajectory_coverage(train_ids: pl.Series, traj: pl.DataFrame) -> Finding:
    """Every training example_id appears exactly once in the trajectory table."""
    ids = traj["example_id"]
    counts = {
        "missing": int((~train_ids.is_in(ids.implode())).sum()),
        "unknown": int((~ids.is_in(train_ids.implode())).sum()),
        "repeated": ids.len() - ids.n_unique(),
    }
    bad = {k: v for k, v in counts.items() if v}
    summary = (
        f"all {train_ids.len()} examples present once"
        if not bad
        else ", ".join(f"{v} {k} example_ids" for k, v in bad.items())
    )
    return Finding(not bad, summary, counts)


def check_trajectory_finite(traj: pl.DataFrame, loss_cols: list[str]) -> Finding:
    """No NaN or inf loss except in rows flagged ``truncated`` (whose response may be gone)."""
    bad_expr = pl.any_horizontal(~pl.col(c).is_finite() | pl.col(c).is_null() for c in loss_cols)
    bad = traj.filter(bad_expr)
    unflagged = bad.filter(~pl.col("truncated")).height
    counts = {"non_finite_unflagged": unflagged, "non_finite_flagged": bad.height - unflagged}
    summary = (
        f"all losses finite ({bad.height} flagged truncated rows without a response excepted)"
        if not unflagged
        else f"{unflagged} rows have NaN/inf losses without being flagged truncated"
    )
    return Finding(unflagged == 0, summary, counts)


def check_loss_decreases(traj: pl.DataFrame, loss_cols: list[str]) -> Finding:
    """The mean loss at the last checkpoint is below the first: the proxy learned something."""
    first, last = loss_cols[0], loss_cols[-1]
    finite = traj.filter(pl.col(first).is_finite() & pl.col(last).is_finite())
    m_first, m_last = float(finite[first].mean() or 0), float(finite[last].mean() or 0)
    passed = m_last < m_first
    summary = f"mean loss {m_first:.4f} at {first} -> {m_last:.4f} at {last}"
    return Finding(passed, summary, {})
