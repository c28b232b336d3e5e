"""The study's judges: a validation split for choices and an optional held-out test split for
the numbers reported, carved from the user's own pool or read from files, never trained on.

Per source, the rows whose seeded hash of ``example_id`` is smallest are held out, so a split
depends on the ids and the seed only (not on row order), and every source is judged. The test
split is carved first, with its own salt; validation is drawn by its usual rule from the rest.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import polars as pl

from ..data.eval_sets import resolve_answer_types
from ..data.schema import as_eval_table
from ..selection import usable_rows

VALIDATION_PREFIX = "validation:"
TEST_PREFIX = "test:"


@dataclass(frozen=True)
class StudySplit:
    train: pl.DataFrame  # the pool's rows the cells select from (raw_dataset columns)
    trajectories: pl.DataFrame  # their loss trajectories
    validation: pl.DataFrame  # EVAL_SCHEMA: one evaluation set per source
    test: pl.DataFrame | None = None  # EVAL_SCHEMA, read once per reported cell; None: none
    dropped_as_judged: int = 0  # pool rows whose prompt a given judge file holds: not trained on


@dataclass(frozen=True)
class HoldOut:
    """How much of each source one judge takes: ``share`` of its usable rows, at most
    ``max_rows`` in all (split over the sources in proportion)."""

    share: float
    max_rows: int
    min_per_source: int = 1


def carve_validation(
    train: pl.DataFrame,
    trajectories: pl.DataFrame,
    share: float,
    max_rows: int,
    seed: int,
    min_per_source: int = 1,
) -> StudySplit:
    """Hold out ``share`` of each source's usable rows (``max_rows`` in all, split over the
    sources in proportion; at least ``min_per_source`` each) as the study's validation set."""
    return carve_split(
        train, trajectories, seed, HoldOut(share, max_rows, min_per_source), test=None
    )


def carve_split(
    train: pl.DataFrame,
    trajectories: pl.DataFrame,
    seed: int,
    validation: HoldOut | pl.DataFrame,
    test: HoldOut | pl.DataFrame | None = None,
) -> StudySplit:
    """The pool less its judges. Each judge is carved per source (a HoldOut) or given as an
    evaluation table (files the user holds out); a given table takes no row from the pool."""
    usable = train.join(usable_rows(trajectories).select("example_id"), on="example_id", how="semi")
    if usable.is_empty():
        raise ValueError("the pool has no row with a loss trajectory: nothing to study")
    given = [t for t in (validation, test) if isinstance(t, pl.DataFrame)]
    dropped = 0
    if given:  # a problem a judge holds is never trained on: drop it from the pool
        judged = pl.concat([t.select("prompt") for t in given]).unique()
        before = usable.height
        usable = usable.join(judged, on="prompt", how="anti")
        dropped = before - usable.height
    test_table = None
    if isinstance(test, HoldOut):
        test_table, usable = _hold_out(usable, test, f"test:{seed}", TEST_PREFIX, "test")
    elif test is not None:
        test_table = _given(test, TEST_PREFIX)
    if isinstance(validation, HoldOut):
        val_table, usable = _hold_out(usable, validation, str(seed), VALIDATION_PREFIX,
                                      "validation")  # fmt: skip
    else:
        val_table = _given(validation, VALIDATION_PREFIX)
    traj = trajectories.join(usable.select("example_id"), on="example_id", how="semi")
    return StudySplit(usable, traj, val_table, test_table, dropped)


def _hold_out(
    usable: pl.DataFrame, rule: HoldOut, salt: str, prefix: str, judge: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the held-out rows as evaluation sets '<prefix><source>', the rest)."""
    if not 0 < rule.share < 1:
        raise ValueError(f"{judge}_share must be in (0, 1), got {rule.share}")
    counts = dict(usable.group_by("source").len().iter_rows())
    wanted = {s: max(rule.min_per_source, math.floor(rule.share * n)) for s, n in counts.items()}
    total = sum(wanted.values())
    if total > rule.max_rows:  # the cap, over the sources in proportion
        wanted = {
            s: max(rule.min_per_source, math.floor(rule.max_rows * w / total))
            for s, w in wanted.items()
        }
    for source, n in counts.items():
        if wanted[source] >= n:
            raise ValueError(
                f"source {source!r} has {n} usable rows: too few to hold out {wanted[source]} "
                f"for {judge} and train on the rest (lower {judge}_share, or give more rows)"
            )
    # blake2b, not polars' hash: polars does not promise the same hash across its versions.
    keys = [_key(salt, i) for i in usable["example_id"].to_list()]
    ranked = usable.with_columns(_key=pl.Series(keys, dtype=pl.String)).with_columns(
        _rank=pl.col("_key").rank("ordinal").over("source")
    )
    quota = pl.col("source").replace_strict(wanted, return_dtype=pl.Int64)
    held = ranked.filter(pl.col("_rank") <= quota).drop("_rank", "_key").sort("example_id")
    kept = usable.join(held.select("example_id"), on="example_id", how="anti")
    table = held.with_columns(
        eval_set=pl.lit(prefix) + pl.col("source"), domain=pl.lit("in_domain")
    )
    return resolve_answer_types(as_eval_table(table)), kept


def _given(table: pl.DataFrame, prefix: str) -> pl.DataFrame:
    """A held-out file's rows as one set per source, '<prefix><source>', as carved sets are."""
    sets = table.with_columns(
        eval_set=pl.lit(prefix) + pl.col("source"), domain=pl.lit("in_domain")
    )
    return resolve_answer_types(as_eval_table(sets))


def _key(salt: str | int, example_id: str) -> str:
    return hashlib.blake2b(f"{salt}:{example_id}".encode(), digest_size=8).hexdigest()
