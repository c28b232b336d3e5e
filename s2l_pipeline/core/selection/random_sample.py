"""Random: a uniform sample of the budget, the baseline every method must beat."""

from __future__ import annotations

import numpy as np
import polars as pl

from .common import Selection, SelectionOptions


def random_rows(n: int, budget: int, seed: int, nested: bool = False) -> np.ndarray:
    """Sorted row indices of a seeded uniform sample without replacement; ``nested``: the
    prefix of one seeded permutation, so a larger budget keeps every row of a smaller one."""
    rng = np.random.default_rng(seed)
    if nested:
        return np.sort(rng.permutation(n)[: min(budget, n)])
    return np.sort(rng.choice(n, min(budget, n), replace=False))


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    return Selection(random_rows(traj.height, budget, seed, opts.nested))
