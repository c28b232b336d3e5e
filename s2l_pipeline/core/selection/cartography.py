"""Dataset cartography (Swayamdipta et al. 2020): the most ambiguous examples first.

confidence = mean over checkpoints of exp(-loss) (the geometric-mean probability of the gold
response tokens); variability = its standard deviation; ambiguous = high variability.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .common import Selection, SelectionOptions, matrix, pick_steps, top_rows


def confidence_variability(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.exp(-losses.astype(np.float64))
    return p.mean(axis=1), p.std(axis=1)


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    conf, var = confidence_variability(matrix(traj, pick_steps(traj, opts.steps, "trained")))
    return Selection(
        top_rows(var, budget, traj["example_id"]), info={"mean_confidence": float(conf.mean())}
    )
