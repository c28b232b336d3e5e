"""Selection stages: the training pool, the trajectory clusters and the chosen subset.

``choose_subset`` is the whole of selection on tables; the asset stage ``make_subset``, the
``s2l select`` command and the benchmarks all go through it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..selection import (
    MODEL_METHODS,
    ClusterSummary,
    SelectionInputError,
    SelectionOptions,
    choose,
    cluster_table,
)
from ..selection.common import pick_steps
from ..selection.diagnostics import (
    POOL_COLUMNS,
    SKETCHED_PARAMETERS,
    PremiseReport,
    premise_on_pool,
)
from ..selection.ifd import response_losses
from ..selection.learning_percentage import epoch1_from_schedule
from ..selection.pool import assemble_pool
from ..selection.report import compare_counts
from ..support.hashing import table_hash
from ..support.records import from_plain, to_plain
from ..support.storage import ArtifactStore
from ..support.tables import read_table, write_table
from ..trajectories import step_of, steps_of
from .lineage import pool_lineage, subset_lineage
from .manifests import (
    ClustersManifest,
    ModelManifest,
    PoolManifest,
    RawDatasetManifest,
    ShardTrajectoriesManifest,
    SubsetManifest,
    TrajectoriesManifest,
)


@dataclass(frozen=True)
class Pool:
    manifest: PoolManifest
    base_rows: int
    waiting: list[str]  # shards scored with another proxy: left out until rescored


def make_pool(
    raw: RawDatasetManifest,
    trajectories: TrajectoriesManifest,
    proxy: ModelManifest,
    shards: Mapping[str, ShardTrajectoriesManifest | None],
    store: ArtifactStore,
) -> Pool:
    """raw_dataset plus every shard scored with this proxy, rows and trajectories, deduplicated."""
    base = read_table(raw.train, store)
    parts, used, waiting = [], {}, []
    for key, m in shards.items():
        if m is None or m.proxy_fingerprint != proxy.fingerprint:
            waiting.append(key)
            continue
        parts.append((read_table(m.train, store), read_table(m.trajectories, store)))
        used[key] = m.train.content_hash
    train, traj = assemble_pool(base, read_table(trajectories.trajectories, store), parts)
    version = table_hash(train)
    train_ref = write_table(train, store, f"training_pool/{version[:16]}/train.parquet", version)
    traj_ref = write_table(
        traj, store, f"training_pool/{version[:16]}/trajectories.parquet", table_hash(traj)
    )
    lineage = pool_lineage(
        raw.train.content_hash, used, version, traj_ref.content_hash, proxy.fingerprint
    )
    manifest = PoolManifest(train=train_ref, trajectories=traj_ref, shards=used, lineage=lineage)
    return Pool(manifest, base.height, waiting)


@dataclass(frozen=True)
class Clusters:
    manifest: ClustersManifest
    summary: ClusterSummary
    sizes: list[int]  # members per cluster, in cluster order
    steps: list[int]  # the checkpoint steps the trajectories used


def make_clusters(
    pool: PoolManifest, opts: SelectionOptions, seed: int, store: ArtifactStore
) -> Clusters:
    """S2L's K-means over the pool's trajectories (per stratum when ``opts.stratify_by``)."""
    traj = read_table(pool.trajectories, store)
    data = read_table(pool.train, store)
    table, summary = cluster_table(traj, data, seed, opts)
    version = table_hash(table)
    ref = write_table(table, store, f"trajectory_clusters/{version[:16]}/clusters.parquet", version)
    steps = [step_of(c) for c in pick_steps(traj, opts.steps, "trained")]
    manifest = ClustersManifest(
        clusters=ref,
        options=dataclasses.replace(opts, steps=tuple(steps)),
        n_clusters=summary.clusters,
        pool=pool.lineage,
        seed=seed,
    )
    sizes = table.group_by("cluster").len().sort("cluster")["len"].to_list()
    return Clusters(manifest, summary, sizes, steps)


@dataclass(frozen=True)
class Chosen:
    """A selection on tables: the chosen ids (with cluster when known), their rows of the data
    (all columns, + cluster), what the selector reported, and the S2L clusters it used."""

    ids: pl.DataFrame
    rows: pl.DataFrame | None
    info: dict
    clusters: pl.DataFrame | None


def choose_subset(
    method: str,
    trajectories: pl.DataFrame,
    data: pl.DataFrame | None,
    budget: int | float,
    seed: int,
    opts: SelectionOptions,
    clusters: pl.DataFrame | None = None,
    embeddings: np.ndarray | None = None,
    proxy_dir: Path | None = None,
    max_length: int | None = None,
) -> Chosen:
    """Select ``budget`` examples; S2L clusters the trajectories first unless given clusters;
    ``ifd`` runs the proxy in ``proxy_dir`` over the responses alone (its cost in the info)."""
    alone, cost = None, {}
    if clusters is None and method == "s2l":
        t0 = time.process_time()
        clusters, _ = cluster_table(trajectories, data, seed, opts)
        cost["clustering_cpu_seconds"] = round(time.process_time() - t0, 3)
    if method in MODEL_METHODS:
        if proxy_dir is None or data is None:
            raise SelectionInputError(f"{method} runs the proxy: give its checkpoint and the data")
        found = response_losses(proxy_dir, data, max_length)
        alone = found.table
        cost["model_cpu_seconds"] = round(found.cpu_seconds, 3)
        cost["selection_flops"] = found.flops
    ids, info = choose(method, trajectories, data, budget, seed, opts, clusters, embeddings, alone)
    info = {**info, **cost}
    rows = None
    if data is not None:
        rows = data.join(ids.select("example_id"), on="example_id", how="semi")
        if clusters is not None:
            rows = rows.join(
                clusters.select("example_id", "cluster"),
                on="example_id",
                how="left",
                maintain_order="left",
            )
    return Chosen(ids, rows, info, clusters)


@dataclass(frozen=True)
class Subset:
    manifest: SubsetManifest
    pool_rows: int
    by_source: pl.DataFrame  # rows and shares per source, pool against subset
    by_cluster: pl.DataFrame


def selection_options(
    clusters: ClustersManifest, proxy: ModelManifest, trajectories: pl.DataFrame, **changes
) -> SelectionOptions:
    """The clustering's options with the selection's ``changes``; epoch 1's checkpoint from the
    proxy's schedule unless given."""
    opts = dataclasses.replace(clusters.options, **changes)
    if opts.epoch1_step is None:
        epoch1 = epoch1_from_schedule(proxy.final.step, proxy.train.epochs, steps_of(trajectories))
        opts = dataclasses.replace(opts, epoch1_step=epoch1)
    return opts


def make_subset(
    pool: PoolManifest,
    clusters: ClustersManifest,
    proxy: ModelManifest,
    method: str,
    budget: int | float,
    seed: int,
    store: ArtifactStore,
    **changes,
) -> Subset:
    """The chosen rows of the pool (all columns + cluster), with their lineage."""
    data = read_table(pool.train, store)
    traj = read_table(pool.trajectories, store)
    cluster_rows = read_table(clusters.clusters, store)
    opts = selection_options(clusters, proxy, traj, **changes)
    proxy_dir = store.fetch_dir(proxy.final.uri) if method in MODEL_METHODS else None
    chosen = choose_subset(
        method,
        traj,
        data,
        budget,
        seed,
        opts,
        cluster_rows,
        None,
        proxy_dir,
        proxy.train.max_length,
    )
    subset = chosen.rows
    version = table_hash(subset)
    ref = write_table(subset, store, f"selected_subset/{version[:16]}/subset.parquet", version)
    n_budget = chosen.info["budget"]
    manifest = SubsetManifest(
        subset=ref,
        method=method,
        budget=n_budget,
        seed=seed,
        info={k: v for k, v in chosen.info.items() if k != "centroids"},
        lineage=subset_lineage(pool, proxy, clusters, method, n_budget, seed, version),
    )
    full = data.join(cluster_rows.select("example_id", "cluster"), on="example_id", how="left")
    return Subset(
        manifest,
        data.height,
        compare_counts(full, subset, "source"),
        compare_counts(full, subset, "cluster"),
    )


# Bump when premise_on_pool's numbers would change for the same inputs: stored reports are
# keyed by their inputs and this.
PREMISE_VERSION = 1


def premise_of_clusters(
    clusters: ClustersManifest, pool: PoolManifest, proxy: ModelManifest, store: ArtifactStore
) -> PremiseReport:
    """The premise diagnostic of these clusters over this pool with this proxy, kept in the
    store by its inputs: every rerun of a study or a run checks the unchanged clusters again,
    and the report (a proxy backward pass per sampled row) was most of that step."""
    inputs = [
        PREMISE_VERSION, SKETCHED_PARAMETERS, clusters.clusters.content_hash,
        pool.trajectories.content_hash, pool.train.content_hash, proxy.final.sha256,
        proxy.train.max_length, list(clusters.options.steps or []), clusters.seed,
    ]  # fmt: skip
    digest = hashlib.sha256(json.dumps(inputs, default=str).encode()).hexdigest()[:16]
    key = f"trajectory_clusters/premise/{digest}.json"
    if store.exists(key):
        return from_plain(PremiseReport, json.loads(store.read_text(key)))
    report = premise_on_pool(
        read_table(pool.trajectories, store),
        read_table(pool.train, store, POOL_COLUMNS),
        read_table(clusters.clusters, store),
        store.fetch_dir(proxy.final.uri),
        proxy.train.max_length,
        steps=clusters.options.steps or None,
        seed=clusters.seed,
    )
    store.write_text(key, json.dumps(to_plain(report)))
    return report
