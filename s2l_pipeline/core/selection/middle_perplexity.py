"""Middle perplexity: examples whose final perplexity is closest to the median (neither
trivial nor noise), after Marion et al. 2023."""

from __future__ import annotations

import numpy as np
import polars as pl

from .common import Selection, SelectionOptions, matrix, pick_steps, top_rows


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    last = pick_steps(traj, opts.steps, "last")[-1]
    ppl = np.exp(matrix(traj, [last])[:, 0].astype(np.float64))
    return Selection(top_rows(-np.abs(ppl - np.median(ppl)), budget, traj["example_id"]))
