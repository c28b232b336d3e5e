"""Column layouts of the tables the pipeline writes, so every module agrees on them."""

from __future__ import annotations

import polars as pl

TASKS = ("math", "summarization")
REASONING_GYM = "reasoning_gym"  # answer type: judged by the family's own scorer

RAW_SCHEMA: dict[str, pl.DataType] = {
    "example_id": pl.String(),
    "source": pl.String(),
    "prompt": pl.String(),
    "response": pl.String(),
    "answer": pl.String(),
    "task": pl.String(),
    "messages": pl.String(),  # a chat row's turns as JSON (core/data/chat.py), else null
}

EVAL_SCHEMA: dict[str, pl.DataType] = {
    "eval_set": pl.String(),
    "domain": pl.String(),  # in_domain | out_of_domain | external
    **RAW_SCHEMA,
    "metadata": pl.String(),  # JSON the set's own scorer needs (reasoning-gym entry), else null
    # How a generation is judged: reasoning_gym | number | choice | math | text (null for
    # summaries); answer_pattern: a regex with one group that finds the answer in a generation.
    "answer_type": pl.String(),
    "answer_pattern": pl.String(),
}

_RAW_OPTIONAL = ("messages",)
_EVAL_OPTIONAL = (*_RAW_OPTIONAL, "metadata", "answer_type", "answer_pattern")


def as_raw_table(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` in RAW_SCHEMA's column order and types; optional columns it lacks are null."""
    missing = [pl.lit(None, pl.String).alias(c) for c in _RAW_OPTIONAL if c not in df.columns]
    return df.with_columns(missing).select(list(RAW_SCHEMA)).cast(RAW_SCHEMA)


def as_eval_table(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` in EVAL_SCHEMA's column order and types; optional columns it lacks are null."""
    missing = [pl.lit(None, pl.String).alias(c) for c in _EVAL_OPTIONAL if c not in df.columns]
    return df.with_columns(missing).select(list(EVAL_SCHEMA)).cast(EVAL_SCHEMA)


# Where each training row came from: its file (or 'embedded:reasoning-gym'), record number, and
# the record as the user wrote it (JSON), so a subset can be exported in the user's own schema.
ORIGIN_SCHEMA: dict[str, pl.DataType] = {
    "example_id": pl.String(),
    "file": pl.String(),
    "line": pl.Int64(),
    "record": pl.String(),
}

REJECTED_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "line": pl.Int64(),
    "field": pl.String(),
    "reason": pl.String(),
    "raw": pl.String(),
}
