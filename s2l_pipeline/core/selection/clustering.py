"""K-means on trajectory vectors with faiss, trained on an explicit number of points.

faiss.Kmeans silently trains on at most ``max_points_per_centroid`` (256) x K sampled points. We
train on all points up to ``max_train_points`` (our own seeded sample beyond it, so the cap is
visible in config and metadata) and then assign every point to its nearest centroid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Clustering:
    labels: np.ndarray  # int64, global cluster id per row
    distances: np.ndarray  # float32, L2 distance to the row's centroid
    centroids: np.ndarray  # float32 [n_clusters, dim]
    inertia: float  # sum of squared distances
    n_trained_on: int


def kmeans(
    x: np.ndarray,
    k: int,
    seed: int = 0,
    niter: int = 20,
    max_train_points: int | None = None,
) -> Clustering:
    """Seeded K-means of the rows of ``x`` (float32, L2 on raw values)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if k < 1 or k > n:
        raise ValueError(f"K={k} clusters for {n} examples: K must be between 1 and N")
    train = x
    if max_train_points and n > max_train_points:
        rng = np.random.default_rng(seed)
        train = x[np.sort(rng.choice(n, max_train_points, replace=False))]
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=seed,
        verbose=False,
        max_points_per_centroid=math.ceil(len(train) / k) + 1,  # never subsample further
        min_points_per_centroid=1,
    )
    km.train(train)
    sq, labels = km.index.search(x, 1)
    sq = np.maximum(sq[:, 0], 0)
    return Clustering(
        labels=labels[:, 0].astype(np.int64),
        distances=np.sqrt(sq).astype(np.float32),
        centroids=km.centroids.copy(),
        inertia=float(sq.sum(dtype=np.float64)),
        n_trained_on=len(train),
    )


def kmeans_by_group(
    x: np.ndarray,
    groups: np.ndarray | None,
    k: int,
    seed: int = 0,
    niter: int = 20,
    max_train_points: int | None = None,
) -> Clustering:
    """K-means inside each group (e.g. each source) with min(k, group size) clusters.

    Cluster ids are global: groups in sorted order, each taking the next block of ids, so no
    cluster ever spans two groups.
    """
    if groups is None:
        return kmeans(x, k, seed, niter, max_train_points)
    labels = np.empty(len(x), dtype=np.int64)
    distances = np.empty(len(x), dtype=np.float32)
    centroids, inertia, trained, offset = [], 0.0, 0, 0
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        part = kmeans(x[rows], min(k, len(rows)), seed, niter, max_train_points)
        labels[rows] = part.labels + offset
        distances[rows] = part.distances
        centroids.append(part.centroids)
        inertia += part.inertia
        trained += part.n_trained_on
        offset += len(part.centroids)
    return Clustering(labels, distances, np.concatenate(centroids), inertia, trained)
