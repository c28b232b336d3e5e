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
