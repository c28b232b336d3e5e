"""Learning percentage's sampling without its score: the control that isolates the score.

The same all-MiniLM-L6-v2 K-means clusters and the same budget per cluster (in proportion to
its size) as ``learning_percentage``, but uniformly random inside each cluster instead of
hardest first. If learning percentage beats random only as much as this does, its gain comes
from the clusters, not from the learning-percentage order.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .common import Selection, SelectionOptions
from .learning_percentage import sample_embedding_clusters


def select(
    traj: pl.DataFrame,
    data: pl.DataFrame | None,
    budget: int,
    seed: int,
    opts: SelectionOptions,
    embeddings: np.ndarray | None = None,
) -> Selection:
    order = np.random.default_rng(seed).random(traj.height)  # a seeded uniform order
    rows, k = sample_embedding_clusters(traj, data, budget, seed, opts, order, embeddings)
    return Selection(rows, info={"embedding_clusters": k})
