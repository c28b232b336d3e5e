"""Random: a uniform sample of the budget, the baseline every method must beat."""

from __future__ import annotations

import numpy as np
import polars as pl

from .common import Selection, SelectionOptions


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    rng = np.random.default_rng(seed)
    return Selection(np.sort(rng.choice(traj.height, budget, replace=False)))
