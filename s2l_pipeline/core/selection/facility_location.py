"""Facility location: a subset that covers the trajectory space, by lazy greedy maximization of
F(S) = sum_i max_{j in S} sim(i, j) on a sparse k-nearest-neighbour graph (memory O(N k), never a
dense N x N matrix). sim = (largest kNN distance) - distance, so it is non-negative."""

from __future__ import annotations

import heapq

import numpy as np
import polars as pl

from .common import Selection, SelectionOptions, matrix, pick_steps


def knn_similarity(x: np.ndarray, k: int):
    """Symmetric sparse similarity (scipy CSC) over each point's k nearest neighbours."""
    import faiss
    from scipy import sparse

    n = len(x)
    k = min(k + 1, n)  # +1: each point is its own nearest neighbour
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    sq, nbr = index.search(x, k)
    dist = np.sqrt(np.maximum(sq, 0))
    sim = (dist.max() - dist).astype(np.float64) + 1e-9
    rows = np.repeat(np.arange(n), k)
    w = sparse.csr_matrix((sim.ravel(), (rows, nbr.ravel())), shape=(n, n))
    return w.maximum(w.T).tocsc()


def greedy(w, budget: int) -> np.ndarray:
    """Lazy greedy: a popped candidate is taken if its fresh gain still beats the next bound."""
    n = w.shape[0]
    cur = np.zeros(n)
    gains = np.asarray(w.sum(axis=0)).ravel()
    heap = [(-g, j) for j, g in enumerate(gains)]
    heapq.heapify(heap)
    chosen: list[int] = []
    while heap and len(chosen) < budget:
        _, j = heapq.heappop(heap)
        lo, hi = w.indptr[j], w.indptr[j + 1]
        idx, val = w.indices[lo:hi], w.data[lo:hi]
        gain = np.maximum(val - cur[idx], 0).sum()
        if not heap or gain >= -heap[0][0]:
            chosen.append(j)
            cur[idx] = np.maximum(cur[idx], val)
        else:
            heapq.heappush(heap, (-gain, j))
    return np.sort(np.asarray(chosen, dtype=np.int64))


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    x = matrix(traj, pick_steps(traj, opts.steps, "trained"))
    return Selection(greedy(knn_similarity(x, opts.knn), budget))
