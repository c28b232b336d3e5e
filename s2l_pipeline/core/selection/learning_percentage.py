"""Learning percentage (Mekala et al. 2024): hardest examples first within embedding clusters.

With perplexities P0 (untrained, step 0), P1 (end of epoch 1) and Pn (last checkpoint):
LP(1) = (P0 - P1) / (P0 - Pn), LP_app = (P0 - P1) / P0. A low LP means the example was learnt
late: hard. Examples are clustered by all-MiniLM-L6-v2 embeddings of prompt + response, each
cluster gives its share of the budget in proportion to its size (as in the Small2Large code),
lowest LP first.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..trajectories import loss_column, steps_of
from .budget import group_rows, proportional_allocation
from .clustering import kmeans
from .common import Selection, SelectionInputError, SelectionOptions, matrix


def learning_percentage(l0: np.ndarray, l1: np.ndarray, ln: np.ndarray, variant: str) -> np.ndarray:
    """LP from losses (perplexity = exp(loss)); an example with P0 == Pn gets LP 1 (neutral)."""
    p0, p1, pn = (np.exp(v.astype(np.float64)) for v in (l0, l1, ln))
    if variant == "lp_app":
        return (p0 - p1) / p0
    if variant != "lp1":
        raise SelectionInputError(f"unknown learning-percentage variant {variant!r} (lp1, lp_app)")
    denom = p0 - pn
    safe = np.where(denom != 0, denom, 1.0)
    return np.where(denom != 0, (p0 - p1) / safe, 1.0)


def epoch1_step(available: list[int], requested: int | None) -> int:
    """The checkpoint ending epoch 1: as requested, else the one nearest a third of training
    (the paper's recipe trains 3 epochs)."""
    if requested is not None:
        if requested not in available:
            raise SelectionInputError(f"epoch-1 step {requested} is not a checkpoint ({available})")
        return requested
    trained = [s for s in available if s > 0]
    return min(trained, key=lambda s: (abs(s - available[-1] / 3), s))


def epoch1_from_schedule(last_step: int, epochs: float, available: list[int]) -> int:
    """The checkpoint nearest the end of epoch 1 of a run of ``epochs`` ending at ``last_step``."""
    per_epoch = last_step / max(float(epochs), 1e-9)
    return min((s for s in available if s > 0), key=lambda s: (abs(s - per_epoch), s))


def select(
    traj: pl.DataFrame,
    data: pl.DataFrame | None,
    budget: int,
    seed: int,
    opts: SelectionOptions,
    embeddings: np.ndarray | None = None,
) -> Selection:
    available = steps_of(traj)
    if 0 not in available:
        raise SelectionInputError("learning percentage needs the step-0 (untrained) checkpoint")
    e1 = epoch1_step(available, opts.epoch1_step)
    x = matrix(traj, [loss_column(0), loss_column(e1), loss_column(available[-1])])
    lp = learning_percentage(x[:, 0], x[:, 1], x[:, 2], opts.lp_variant)
    rows, k = sample_embedding_clusters(traj, data, budget, seed, opts, lp, embeddings)
    return Selection(
        rows, info={"epoch1_step": e1, "embedding_clusters": k, "mean_lp": float(np.mean(lp))}
    )


def sample_embedding_clusters(
    traj: pl.DataFrame,
    data: pl.DataFrame | None,
    budget: int,
    seed: int,
    opts: SelectionOptions,
    order: np.ndarray,
    embeddings: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """(rows, K): MiniLM K-means clusters give budget in proportion to their size, lowest
    ``order`` first inside each (ties by example id)."""
    if embeddings is None:
        embeddings = embed_rows(traj, data)
    k = min(opts.embedding_clusters, max(1, traj.height // 10))  # >= 10 rows per cluster
    labels = kmeans(embeddings, k, seed=seed).labels
    uniq, members = group_rows(labels)
    take = proportional_allocation([len(m) for m in members], budget)
    ids = traj["example_id"].to_numpy()
    parts = [m[np.lexsort((ids[m], order[m]))[:t]] for m, t in zip(members, take, strict=True)]
    return np.sort(np.concatenate(parts)), k


def embed_rows(traj: pl.DataFrame, data: pl.DataFrame | None) -> np.ndarray:
    from ..lm.embeddings import embed_texts

    if data is None or not {"prompt", "response"} <= set(data.columns):
        raise SelectionInputError("learning percentage needs data with prompt and response text")
    texts = traj.select("example_id").join(
        data.select("example_id", text=pl.col("prompt") + "\n" + pl.col("response")),
        on="example_id",
        how="left",
        maintain_order="left",
    )["text"]
    if texts.null_count():
        raise SelectionInputError(f"{texts.null_count()} trajectory rows are missing from the data")
    return embed_texts(texts.to_list())
