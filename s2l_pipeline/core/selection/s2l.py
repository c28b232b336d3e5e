"""SmallToLarge (Yang et al. 2024): cluster loss trajectories, sample the budget evenly.

K-means (faiss, L2 on raw losses) over the trained checkpoints' losses by default; clusters by
size ascending each take floor(remaining / clusters_left), small ones whole, uniform without
replacement inside. With ``stratify_by`` the budget is first split over that column's values
(e.g. source) by the same rule, and each value is clustered and sampled on its own, as in the
official code. ``min_cluster_size`` 3 skips clusters of <= 2 members and uses them only to fill
a shortfall, as the official code does (default 1: tiny clusters are taken whole). Unlike the
official code, every draw comes from a seeded generator.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .budget import balanced_allocation, group_rows, sample_balanced
from .clustering import Clustering, kmeans_by_group
from .common import Selection, SelectionInputError, SelectionOptions, matrix, pick_steps


def strata_of(
    traj: pl.DataFrame, data: pl.DataFrame | None, column: str | None
) -> np.ndarray | None:
    """``column`` of ``data`` aligned to the trajectory rows (by example_id), or None."""
    if column is None:
        return None
    if data is None or column not in data.columns:
        raise SelectionInputError(f"stratifying by {column!r} needs data with a {column!r} column")
    aligned = traj.select("example_id").join(
        data.select("example_id", column), on="example_id", how="left", maintain_order="left"
    )[column]
    if aligned.null_count():
        raise SelectionInputError(
            f"{aligned.null_count()} trajectory rows have no {column!r} in the data "
            "(their example_id is missing there)"
        )
    return aligned.cast(pl.String).to_numpy()


def cluster(
    traj: pl.DataFrame, data: pl.DataFrame | None, seed: int, opts: SelectionOptions
) -> Clustering:
    """The clustering S2L samples from (the trajectory_clusters asset runs exactly this)."""
    x = matrix(traj, pick_steps(traj, opts.steps, "trained"))
    strata = strata_of(traj, data, opts.stratify_by)
    if strata is None and opts.clusters > traj.height:
        raise SelectionInputError(
            f"K={opts.clusters} clusters for {traj.height} examples: K must not exceed N"
        )
    return kmeans_by_group(
        x, strata, opts.clusters, seed, opts.kmeans_iterations, opts.max_train_points
    )


def sample(
    labels: np.ndarray,
    strata: np.ndarray | None,
    budget: int,
    seed: int,
    min_cluster_size: int = 1,
    nested: bool = False,
) -> np.ndarray:
    """Balanced sampling over clusters, inside strata when given; sorted row indices.
    ``nested``: each cluster's rows are a prefix of its own permutation (see sample_balanced)."""
    rng = np.random.default_rng(seed)
    if strata is None:
        return sample_balanced(labels, budget, rng, min_cluster_size, seed if nested else None)
    names, members = group_rows(strata)
    take = balanced_allocation([len(m) for m in members], budget, names.tolist())
    order = sorted(range(len(names)), key=lambda i: (len(members[i]), names[i]))
    parts = []
    for i in order:
        if take[i] == len(members[i]):
            parts.append(members[i])
        elif take[i] > 0:
            nested_seed = int(np.random.default_rng([seed, i]).integers(2**31)) if nested else None
            local = sample_balanced(
                labels[members[i]], int(take[i]), rng, min_cluster_size, nested_seed
            )
            parts.append(members[i][local])
    rows = np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
    short = min(budget, len(labels)) - len(rows)
    if short > 0:
        rest = np.setdiff1d(np.arange(len(labels)), rows, assume_unique=True)
        rows = np.sort(np.concatenate([rows, rng.choice(rest, short, replace=False)]))
    return rows


def select(
    traj: pl.DataFrame,
    data: pl.DataFrame | None,
    budget: int,
    seed: int,
    opts: SelectionOptions,
    labels: np.ndarray | None = None,
) -> Selection:
    """``labels``: the rows' clusters from the trajectory_clusters asset; computed if absent."""
    if labels is None:
        labels = cluster(traj, data, seed, opts).labels
    strata = strata_of(traj, data, opts.stratify_by)
    rows = sample(labels, strata, budget, seed, opts.min_cluster_size, opts.nested)
    sizes = np.unique(labels, return_counts=True)[1]
    info = {"clusters": int(len(sizes))}
    if opts.min_cluster_size > 1:
        info["clusters_skipped_small"] = int((sizes < opts.min_cluster_size).sum())
    return Selection(rows, labels, info=info)
