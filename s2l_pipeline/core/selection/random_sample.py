"""Random: a uniform sample of the budget, the baseline every method must beat."""

from __future__ import annotations

import numpy as np
import polars as pl

from .common import Selection, SelectionOptions


def random_rows(n: int, budget: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded uniform sample without replacement."""
    return np.sort(np.random.default_rng(seed).choice(n, min(budget, n), replace=False))


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    return Selection(random_rows(traj.height, budget, seed))


def training_set_rows(
    training_set: str,
    data: pl.DataFrame,
    subset: pl.DataFrame,
    budget: int,
    seed: int,
    usable_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """Rows a target trains on: 'selected' (the subset), 'random' (a uniform sample of the same
    budget and seed, the fair comparison) or 'full' (everything).

    With ``usable_ids`` (rows with a loss trajectory), 'random' and 'full' draw from the same
    usable rows the selectors chose from, so the comparison is like for like.
    """
    if usable_ids is not None and training_set != "selected":
        data = data.filter(pl.col("example_id").is_in(usable_ids.implode()))
    if training_set == "full":
        return data
    if training_set == "random":
        return data[random_rows(data.height, budget, seed)]
    if training_set == "selected":
        return subset.drop("cluster", strict=False)
    raise ValueError(f"unknown training set {training_set!r} (selected, random, full)")
