"""Column layouts of the tables the pipeline writes, so every module agrees on them."""

from __future__ import annotations

import polars as pl

TASKS = ("math", "summarization")

RAW_SCHEMA: dict[str, pl.DataType] = {
    "example_id": pl.String(),
    "source": pl.String(),
    "prompt": pl.String(),
    "response": pl.String(),
    "answer": pl.String(),
    "task": pl.String(),
}

EVAL_SCHEMA: dict[str, pl.DataType] = {
    "eval_set": pl.String(),
    "domain": pl.String(),  # in_domain | out_of_domain | external
    **RAW_SCHEMA,
    "metadata": pl.String(),  # JSON the set's own scorer needs (reasoning-gym entry), else null
}

REJECTED_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "line": pl.Int64(),
    "field": pl.String(),
    "reason": pl.String(),
    "raw": pl.String(),
}
