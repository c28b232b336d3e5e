"""The training pool: the base table and its trajectories plus every shard scored since."""

from __future__ import annotations

import polars as pl

from ..data.shards import union_tables


def assemble_pool(
    base_train: pl.DataFrame,
    base_trajectories: pl.DataFrame,
    shards: list[tuple[pl.DataFrame, pl.DataFrame]],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows, trajectories) of the pool: duplicates dropped (first seen wins), and only the
    trajectories of rows that stayed."""
    train = union_tables([base_train, *(rows for rows, _ in shards)])
    traj = union_tables([base_trajectories, *(t for _, t in shards)])
    return train, traj.join(train.select("example_id"), on="example_id", how="semi")
