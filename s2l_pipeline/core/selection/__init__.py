"""Selectors: (trajectories, data, budget, seed) -> chosen example ids, one module each.

``cluster_table`` and ``choose`` are the two entry points the Dagster assets and the ``s2l
select`` command both call, so the CLI runs exactly the code the assets run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from . import (
    cartography,
    embedding_cluster_random,
    facility_location,
    high_learnability,
    ifd,
    learning_percentage,
    least_confidence,
    longest,
    middle_perplexity,
    random_sample,
    s2l,
    stratified_random,
    zip_compression,
)
from .budget import parse_budget, resolve_budget
from .common import (
    Selection,
    SelectionInputError,
    SelectionOptions,
    scorable,
    validate_trajectories,
)

METHODS = {
    "s2l": s2l.select,
    "random": random_sample.select,
    "stratified_random": stratified_random.select,
    "least_confidence": least_confidence.select,
    "middle_perplexity": middle_perplexity.select,
    "high_learnability": high_learnability.select,
    "learning_percentage": learning_percentage.select,
    "embedding_cluster_random": embedding_cluster_random.select,
    "cartography": cartography.select,
    "facility_location": facility_location.select,
    "longest": longest.select,
    "ifd": ifd.select,
    "zip": zip_compression.select,
}

# The methods that cluster MiniLM embeddings of the texts, and take them precomputed.
EMBEDDING_METHODS = ("learning_percentage", "embedding_cluster_random")
# The methods that run the proxy once more (beside its trajectories).
MODEL_METHODS = ("ifd",)

CLUSTER_SCHEMA = {"example_id": pl.String, "cluster": pl.Int64, "distance": pl.Float32}


def usable_rows(trajectories: pl.DataFrame) -> pl.DataFrame:
    """Validated trajectories without the rows whose response was truncated away."""
    validate_trajectories(trajectories)
    return scorable(trajectories)


@dataclass(frozen=True)
class ClusterSummary:
    """What a clustering came to: K, its fit, and the rows it left out."""

    clusters: int
    inertia: float
    trained_on_points: int
    centroids: list[list[float]]  # rounded to 5 decimals, one per cluster
    excluded_unscorable: int


def cluster_table(
    trajectories: pl.DataFrame, data: pl.DataFrame | None, seed: int, opts: SelectionOptions
) -> tuple[pl.DataFrame, ClusterSummary]:
    """Every usable example's S2L cluster and distance to its centroid, plus a summary."""
    usable = usable_rows(trajectories)
    cl = s2l.cluster(usable, data, seed, opts)
    table = pl.DataFrame(
        {"example_id": usable["example_id"], "cluster": cl.labels, "distance": cl.distances},
        schema=CLUSTER_SCHEMA,
    )
    summary = ClusterSummary(
        clusters=len(cl.centroids),
        inertia=cl.inertia,
        trained_on_points=cl.n_trained_on,
        centroids=cl.centroids.round(5).tolist(),
        excluded_unscorable=trajectories.height - usable.height,
    )
    return table, summary


def choose(
    method: str,
    trajectories: pl.DataFrame,
    data: pl.DataFrame | None,
    budget: int | float,
    seed: int = 0,
    opts: SelectionOptions | None = None,
    clusters: pl.DataFrame | None = None,
    embeddings: np.ndarray | None = None,
    response_losses: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, dict]:
    """The chosen example ids (in trajectory order) with their S2L cluster when known.

    ``embeddings`` (for ``EMBEDDING_METHODS``), one row per usable trajectory row, saves
    re-embedding the same texts when one dataset is selected from many times;
    ``response_losses`` (example_id, response_loss) feeds ``ifd``. The info's
    ``selection_cpu_seconds`` is the selector's own CPU time.
    """
    t0 = time.process_time()
    if method not in METHODS:
        raise SelectionInputError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    opts = opts or SelectionOptions()
    usable = usable_rows(trajectories)
    n_budget = resolve_budget(budget, usable.height)
    labels = None if clusters is None else _aligned(usable, clusters, "cluster", "cluster table")
    extra: dict = {"labels": labels} if method == "s2l" else {}
    if method in EMBEDDING_METHODS and embeddings is not None:
        if len(embeddings) != usable.height:
            raise SelectionInputError(
                f"embeddings have {len(embeddings)} rows for {usable.height} usable trajectories"
            )
        extra["embeddings"] = embeddings
    if method in MODEL_METHODS and response_losses is not None:
        losses = _aligned(usable, response_losses, "response_loss", "loss table")
        extra["response_losses"] = losses.astype(np.float64)
    sel: Selection = METHODS[method](usable, data, n_budget, seed, opts, **extra)
    if len(sel.rows) != n_budget or len(np.unique(sel.rows)) != n_budget:
        raise AssertionError(f"{method} chose {len(sel.rows)} rows for a budget of {n_budget}")
    out = usable.select("example_id")[sel.rows]
    if labels is not None or sel.clusters is not None:
        chosen = (labels if labels is not None else sel.clusters)[sel.rows]
        out = out.with_columns(cluster=pl.Series(chosen, dtype=pl.Int64))
    info = {
        **sel.info,
        "method": method,
        "seed": seed,
        "budget": n_budget,
        "pool": usable.height,
        "excluded_unscorable": trajectories.height - usable.height,
        "selection_cpu_seconds": round(time.process_time() - t0, 3),
    }
    return out, info


def _aligned(usable: pl.DataFrame, table: pl.DataFrame, column: str, what: str) -> np.ndarray:
    """``table``'s ``column`` in the usable rows' order; an id it lacks means it is stale."""
    if table.height == usable.height and table["example_id"].equals(usable["example_id"]):
        return table[column].to_numpy()  # same rows, same order: no join (cheap at 10M)
    aligned = usable.select("example_id").join(
        table.select("example_id", column), on="example_id", how="left", maintain_order="left"
    )[column]
    if aligned.null_count():
        raise SelectionInputError(
            f"{aligned.null_count()} examples have no {column}: the {what} is stale"
        )
    return aligned.to_numpy()


__all__ = [
    "EMBEDDING_METHODS",
    "METHODS",
    "MODEL_METHODS",
    "ClusterSummary",
    "Selection",
    "SelectionInputError",
    "SelectionOptions",
    "choose",
    "cluster_table",
    "parse_budget",
    "resolve_budget",
]
