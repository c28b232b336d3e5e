"""Source-stratified random: the paper's form of S2L without the trajectories.

The budget is split over the values of ``stratify_by`` (default: source) by S2L's rule (by
size ascending, each takes floor(remaining / values left), small ones whole), then drawn
uniformly inside each. Against ``s2l`` with the same stratification it isolates what the
trajectory clusters add beyond balancing the sources.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from . import s2l
from .common import Selection, SelectionOptions


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    column = opts.stratify_by or "source"
    strata = s2l.strata_of(traj, data, column)
    one_cluster = np.zeros(traj.height, dtype=np.int64)  # S2L's sampling with nothing to balance
    rows = s2l.sample(one_cluster, strata, budget, seed)
    return Selection(rows, info={"stratified_by": column, "strata": int(len(np.unique(strata)))})
