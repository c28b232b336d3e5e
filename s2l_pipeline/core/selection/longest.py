"""Longest response: the budget's longest responses, in the proxy's tokens after truncation.

After Zhao et al. 2024 ("Long Is More for Alignment"); large independent comparisons find it
the most stable of the simple baselines. No model runs: the token counts come with the
trajectories. Ties go by example_id, so growing budgets nest.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .common import Selection, SelectionInputError, SelectionOptions, top_rows


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    if "n_response_tokens" not in traj.columns:
        raise SelectionInputError(
            "trajectories: missing column 'n_response_tokens' (longest ranks rows by it)"
        )
    lengths = traj["n_response_tokens"].to_numpy().astype(np.float64)
    rows = top_rows(lengths, budget, traj["example_id"])
    return Selection(
        rows, info={"shortest_chosen_tokens": int(lengths[rows].min()) if len(rows) else 0}
    )
