"""What every selector shares: options, input validation, trajectory features, ranking."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..trajectories import loss_column, loss_columns, steps_of


class SelectionInputError(ValueError):
    """Bad selector input: the message names the file or column and what is wrong."""


@dataclass(frozen=True)
class SelectionOptions:
    """Knobs of the selectors; each selector reads the ones it needs."""

    clusters: int = 100  # K for S2L (and per source when stratified)
    kmeans_iterations: int = 20
    max_train_points: int | None = 1_000_000  # K-means trains on all points up to this cap
    stratify_by: str | None = None  # e.g. 'source', as in the official S2L code
    # S2L sampling: clusters with fewer members are skipped and only fill a shortfall (the
    # official code: 3, i.e. clusters of <= 2 skipped); 1 takes every cluster, tiny ones whole.
    min_cluster_size: int = 1
    steps: tuple[int, ...] | None = None  # checkpoints that feed the trajectories
    epoch1_step: int | None = None  # learning percentage: the checkpoint ending epoch 1
    lp_variant: str = "lp1"  # 'lp1' or 'lp_app'
    embedding_clusters: int = 1000  # learning percentage: K of the sentence-embedding K-means
    knn: int = 20  # facility location: neighbours per point in the sparse graph
    # ZIP's three stages: candidates by standing ratio, kept after scoring with the set, added
    # one by one per round (the paper's defaults).
    zip_k1: int = 10_000
    zip_k2: int = 200
    zip_k3: int = 100
    # Subsets that nest across budgets (random: a permutation's prefix; S2L: each cluster's own
    # permutation's prefix), so a learning curve compares like with like. Off by default: the
    # committed study's draws stay as they were.
    nested: bool = False


# The official code's S2L (BigML-CS-UCLA/S2L, schedules/s2l.py): the budget split over
# sources first (smallest first), K=100 per source, 20 K-means iterations, clusters of <= 2
# members skipped. The `paper` profile and the benchmark's s2l_paper both read it.
PAPER_S2L: dict = {
    "clusters": 100,
    "kmeans_iterations": 20,
    "stratify_by": "source",
    "min_cluster_size": 3,
}


@dataclass
class Selection:
    """Chosen rows (indices into the trajectory table, ascending) and, for S2L, every row's
    cluster."""

    rows: np.ndarray
    clusters: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def validate_trajectories(traj: pl.DataFrame, where: str = "trajectories") -> None:
    if "example_id" not in traj.columns:
        raise SelectionInputError(f"{where}: missing column 'example_id'")
    if not loss_columns(traj):
        raise SelectionInputError(f"{where}: no loss_step_<step> columns")
    ids = traj["example_id"]
    # Unique 64-bit hashes prove unique ids at a fraction of a string hash set's memory;
    # only if hashes collide do we pay for the exact check.
    if ids.hash().n_unique() != traj.height and ids.n_unique() != traj.height:
        raise SelectionInputError(f"{where}: example_id values repeat")


def scorable(traj: pl.DataFrame, where: str = "trajectories") -> pl.DataFrame:
    """Rows usable for selection: NaN losses are allowed only in rows flagged ``truncated``
    (their response was cut away: nothing to train on), and those are left out."""
    cols = loss_columns(traj)
    bad = np.zeros(traj.height, dtype=bool)
    for c in cols:  # column by column: N bytes of scratch, not a copy of the whole table
        bad |= ~np.isfinite(traj[c].to_numpy())
    if not bad.any():
        return traj  # no copy of a clean (10M-row) table
    flagged = traj["truncated"].to_numpy() if "truncated" in traj.columns else np.zeros_like(bad)
    unflagged = np.flatnonzero(bad & ~flagged)
    if len(unflagged):
        row = traj.row(int(unflagged[0]), named=True)
        col = next(c for c in cols if row[c] is None or not np.isfinite(row[c]))
        raise SelectionInputError(
            f"{where}: {len(unflagged)} rows have NaN/inf losses and are not flagged "
            f"truncated (first: example_id {row['example_id']}, column {col})"
        )
    return traj.filter(pl.Series(~bad))


def pick_steps(traj: pl.DataFrame, steps: tuple[int, ...] | None, default: str) -> list[str]:
    """Loss columns to use: ``steps`` if given, else 'all', 'trained' (step > 0) or 'last'."""
    available = steps_of(traj)
    if steps:
        missing = [s for s in steps if s not in available]
        if missing:
            raise SelectionInputError(
                f"checkpoint steps {missing} are not in the trajectories (have {available})"
            )
        return [loss_column(s) for s in sorted(steps)]
    if default == "trained":
        chosen = [s for s in available if s > 0] or available
    elif default == "last":
        chosen = available[-1:]
    else:
        chosen = available
    return [loss_column(s) for s in chosen]


def matrix(traj: pl.DataFrame, cols: list[str]) -> np.ndarray:
    """Row-major float32 [rows, checkpoints], filled column by column: one copy, no temps."""
    out = np.empty((traj.height, len(cols)), dtype=np.float32)
    for j, c in enumerate(cols):
        out[:, j] = traj[c].to_numpy()
    return out


def top_rows(scores: np.ndarray, budget: int, ids: pl.Series) -> np.ndarray:
    """Indices of the ``budget`` highest scores; ties broken by example_id, so runs agree."""
    order = np.lexsort((ids.to_numpy(), -scores))
    return np.sort(order[:budget])
