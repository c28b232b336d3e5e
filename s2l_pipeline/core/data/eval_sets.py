"""Evaluation sets: in-domain held-out problems, out-of-domain families, and files by path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import polars as pl

from ..support.hashing import example_ids
from .generator import generate_ood
from .ingest import (
    RecordCollector,
    TooManyRejected,
    _file_records,
    check_rejected_share,
    expand_path,
)
from .schema import EVAL_SCHEMA


@dataclass(frozen=True)
class EvalFile:
    """A test file (GSM8K test, MATH-500, your own) evaluated as its own set."""

    path: str
    name: str | None = None  # default: folder and file stem, e.g. 'gsm8k_test'
    format: str | None = None
    fields: dict[str, str] | None = None  # any schema, as FileSource.fields
    task: str | None = None  # with fields: math (default) or summarization


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
            _file_records(uri, endpoint_url), uri, spec.format, None, spec.task, spec.fields
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
    rows = accepted.with_columns(
        example_id=pl.Series(
            example_ids(accepted["prompt"].to_list(), accepted["response"].to_list()),
            dtype=pl.String,
        ),
        eval_set=pl.lit(name),
        domain=pl.lit("external"),
        metadata=pl.lit(None, dtype=pl.String),
    )
    return rows.select(list(EVAL_SCHEMA)).cast(EVAL_SCHEMA), rejected


def default_eval_name(path: str) -> str:
    p = PurePosixPath(path.rstrip("/"))
    stem = p.name.split(".")[0]
    return f"{p.parent.name}_{stem}" if p.parent.name else stem


def build_eval_sets(
    heldout: pl.DataFrame,
    ood_per_family: int,
    seed: int,
    files: tuple[EvalFile, ...] = (),
    endpoint_url: str | None = None,
    max_rejected_share: float = 0.01,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All evaluation rows in one table (``eval_set`` and ``domain`` tell them apart)."""
    parts = [heldout.cast(EVAL_SCHEMA)]
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
    return table, rejected


def first_rows_per_set(table: pl.DataFrame, per_set: int | None) -> pl.DataFrame:
    """The first ``per_set`` rows of every evaluation set (all rows with None): a cheaper
    evaluation that keeps every set."""
    if not per_set:
        return table
    return table.filter(pl.int_range(pl.len()).over("eval_set") < per_set)


def eval_summary(table: pl.DataFrame) -> pl.DataFrame:
    return table.group_by("domain", "eval_set", "task").len("rows").sort("domain", "eval_set")
