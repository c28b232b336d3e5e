"""Evaluation sets: in-domain held-out problems, out-of-domain families, and files by path."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ..support.hashing import example_ids
from .answers import ANSWER_TYPES, compile_pattern, detect_answer_type
from .generator import generate_ood
from .ingest import (
    RecordCollector,
    TooManyRejected,
    check_rejected_share,
    expand_path,
    file_label,
    file_records,
    identity_text,
)
from .schema import as_eval_table


@dataclass(frozen=True)
class EvalFile:
    """A test file (GSM8K test, MATH-500, your own) evaluated as its own set."""

    path: str
    name: str | None = None  # default: folder and file stem, e.g. 'gsm8k_test'
    format: str | None = None
    fields: dict[str, str] | None = None  # any schema, as FileSource.fields
    task: str | None = None  # math | summarization; with fields: math when it maps an answer
    answer_type: str | None = None  # number | choice | math | text; None: detect from answers
    answer_pattern: str | None = None  # a regex with one group: where a generation's answer is


def load_eval_file(
    spec: EvalFile, endpoint_url: str | None = None, max_rejected_share: float = 0.01
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(eval rows, rejected rows) of one external test file or folder.

    A file whose rejected share passes ``max_rejected_share``, or that has no usable row, is an
    error (TooManyRejected): an evaluation set must never vanish quietly.
    """
    collector = RecordCollector()
    for uri in expand_path(spec.path, endpoint_url):
        collector.add_records(
            file_records(uri, endpoint_url), uri, spec.format, None, spec.task, spec.fields
        )
    accepted, rejected = collector.frames()
    seen = accepted.height + rejected.height
    check_rejected_share(rejected, seen, max_rejected_share)
    if accepted.is_empty():
        raise TooManyRejected(
            f"{spec.path}: evaluation file has no usable rows ({rejected.height} rejected, "
            f"{len(collector.empty_files)} empty files)"
        )
    name = spec.name or default_eval_name(spec.path)
    if spec.answer_type is not None and spec.answer_type not in ANSWER_TYPES:
        raise ValueError(
            f"{spec.path}: answer_type {spec.answer_type!r} is not one of {', '.join(ANSWER_TYPES)}"
        )
    compile_pattern(spec.answer_pattern, f"{spec.path}: answer_pattern")
    rows = accepted.with_columns(
        example_id=pl.Series(
            example_ids(identity_text(accepted), accepted["response"].to_list()),
            dtype=pl.String,
        ),
        eval_set=pl.lit(name),
        domain=pl.lit("external"),
        answer_type=pl.lit(spec.answer_type, dtype=pl.String),
        answer_pattern=pl.lit(spec.answer_pattern, dtype=pl.String),
    )
    return as_eval_table(rows), rejected


def default_eval_name(path: str) -> str:
    return file_label(path)


def build_eval_sets(
    heldout: pl.DataFrame,
    ood_per_family: int,
    seed: int,
    files: tuple[EvalFile, ...] = (),
    endpoint_url: str | None = None,
    max_rejected_share: float = 0.01,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All evaluation rows in one table (``eval_set`` and ``domain`` tell them apart)."""
    parts = [as_eval_table(heldout)]
    if ood_per_family > 0:
        parts.append(generate_ood(ood_per_family, seed))
    rejected_parts = []
    for spec in files:
        rows, rejected = load_eval_file(spec, endpoint_url, max_rejected_share)
        parts.append(rows)
        rejected_parts.append(rejected)
    table = pl.concat(parts, how="vertical")
    seen: set[str] = set()
    for part in parts:
        names = set(part["eval_set"].unique().to_list())
        if names & seen:
            raise ValueError(
                f"evaluation set name(s) {sorted(names & seen)} used twice: give eval files a name"
            )
        seen |= names
    rejected = pl.concat(rejected_parts) if rejected_parts else RecordCollector().frames()[1]
    return resolve_answer_types(table), rejected


def resolve_answer_types(table: pl.DataFrame) -> pl.DataFrame:
    """Every answer-scored set without an answer type gets the one its answers show."""
    todo = table.filter(pl.col("answer_type").is_null() & (pl.col("task") == "math"))
    if todo.is_empty():
        return table
    detected = {
        name: detect_answer_type(part["answer"].to_list())
        for (name,), part in todo.group_by("eval_set", maintain_order=True)
    }
    fill = pl.col("eval_set").replace_strict(detected, default=None, return_dtype=pl.String)
    return table.with_columns(
        answer_type=pl.when(pl.col("answer_type").is_null() & (pl.col("task") == "math"))
        .then(fill)
        .otherwise(pl.col("answer_type"))
    )


def set_scoring(table: pl.DataFrame) -> pl.DataFrame:
    """Per set: its task, answer type and pattern, and the metric its headline reports."""
    return (
        table.group_by("domain", "eval_set", "task")
        .agg(
            answer_type=pl.col("answer_type").drop_nulls().first(),
            answer_pattern=pl.col("answer_pattern").drop_nulls().first(),
        )
        .with_columns(
            metric=pl.when(pl.col("task") == "summarization")
            .then(pl.lit("ROUGE-L"))
            .otherwise(pl.lit("accuracy (") + pl.col("answer_type") + pl.lit(")"))
        )
        .sort("domain", "eval_set")
    )


def first_rows_per_set(table: pl.DataFrame, per_set: int | None) -> pl.DataFrame:
    """The first ``per_set`` rows of every evaluation set (all rows with None): a cheaper
    evaluation that keeps every set."""
    if not per_set:
        return table
    return table.filter(pl.int_range(pl.len()).over("eval_set") < per_set)


def eval_summary(table: pl.DataFrame) -> pl.DataFrame:
    """Rows per set, with the answer type and metric each set is judged by."""
    rows = table.group_by("domain", "eval_set", "task").len("rows")
    return (
        set_scoring(table).join(rows, on=["domain", "eval_set", "task"]).sort("domain", "eval_set")
    )
