"""The study's validation split: rows carved from the user's own pool, never a test set.

Per source, the rows whose seeded hash of ``example_id`` is smallest go to validation, so the
split depends on the ids and the seed only (not on row order), and every source is judged.
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


@dataclass(frozen=True)
class StudySplit:
    train: pl.DataFrame  # the pool's rows the cells select from (raw_dataset columns)
    trajectories: pl.DataFrame  # their loss trajectories
    validation: pl.DataFrame  # EVAL_SCHEMA: one evaluation set per source


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
    if not 0 < share < 1:
        raise ValueError(f"validation_share must be in (0, 1), got {share}")
    usable = train.join(usable_rows(trajectories).select("example_id"), on="example_id", how="semi")
    if usable.is_empty():
        raise ValueError("the pool has no row with a loss trajectory: nothing to study")
    counts = dict(usable.group_by("source").len().iter_rows())
    wanted = {s: max(min_per_source, math.floor(share * n)) for s, n in counts.items()}
    total = sum(wanted.values())
    if total > max_rows:  # the cap, over the sources in proportion
        wanted = {
            s: max(min_per_source, math.floor(max_rows * w / total)) for s, w in wanted.items()
        }
    for source, n in counts.items():
        if wanted[source] >= n:
            raise ValueError(
                f"source {source!r} has {n} usable rows: too few to hold out {wanted[source]} "
                "for validation and train on the rest (lower validation_share, or give more rows)"
            )
    # blake2b, not polars' hash: polars does not promise the same hash across its versions.
    keys = [_key(seed, i) for i in usable["example_id"].to_list()]
    ranked = usable.with_columns(_key=pl.Series(keys, dtype=pl.String)).with_columns(
        _rank=pl.col("_key").rank("ordinal").over("source")
    )
    quota = pl.col("source").replace_strict(wanted, return_dtype=pl.Int64)
    held = ranked.filter(pl.col("_rank") <= quota).drop("_rank", "_key").sort("example_id")
    kept = usable.join(held.select("example_id"), on="example_id", how="anti")
    validation = held.with_columns(
        eval_set=pl.lit(VALIDATION_PREFIX) + pl.col("source"), domain=pl.lit("in_domain")
    )
    traj = trajectories.join(kept.select("example_id"), on="example_id", how="semi")
    return StudySplit(kept, traj, resolve_answer_types(as_eval_table(validation)))


def _key(seed: int, example_id: str) -> str:
    return hashlib.blake2b(f"{seed}:{example_id}".encode(), digest_size=8).hexdigest()
