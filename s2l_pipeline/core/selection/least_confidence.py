"""Least confidence: the examples the trained proxy finds hardest (highest final loss)."""

from __future__ import annotations

import polars as pl

from .common import Selection, SelectionOptions, matrix, pick_steps, top_rows


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    last = pick_steps(traj, opts.steps, "last")[-1]
    return Selection(top_rows(matrix(traj, [last])[:, 0], budget, traj["example_id"]))
