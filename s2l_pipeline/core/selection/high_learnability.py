"""High learnability: the largest loss drop from the first to the last checkpoint used.

By default the first *trained* checkpoint: from the untrained start every example drops by about
log(vocab) minus its final loss, which would only repeat least-loss ordering.
"""

from __future__ import annotations

import polars as pl

from .common import Selection, SelectionOptions, matrix, pick_steps, top_rows


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    cols = pick_steps(traj, opts.steps, "trained")
    x = matrix(traj, [cols[0], cols[-1]])
    return Selection(top_rows(x[:, 0] - x[:, 1], budget, traj["example_id"]))
