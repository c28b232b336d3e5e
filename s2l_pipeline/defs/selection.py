"""Selection: the training pool, the trajectory clusters and the chosen subset."""

import dataclasses

import dagster as dg
import polars as pl
from pydantic import Field

from ..core.selection import METHODS, SelectionInputError, SelectionOptions, parse_budget
from ..core.stages import selection as stage
from ..core.stages.manifests import (
    ClustersManifest,
    ModelManifest,
    PoolManifest,
    RawDatasetManifest,
    ShardTrajectoriesManifest,
    SubsetManifest,
    TrajectoriesManifest,
    read_manifest,
)
from ..core.support.plots import (
    cluster_trajectories_png,
    compare_bars_png,
    histogram_png,
    markdown_image,
)
from .automation import REFRESH
from .data import scored_shards, shard_inventory
from .executors import cpu_step_tags
from .metadata import md, table_ref_metadata
from .profiles import profiled
from .resources import ArtifactStoreResource, MlflowTracking, log_lineage, mlflow_metadata
from .trajectories import shard_trajectories


@dg.asset(
    op_tags=cpu_step_tags(),
    group_name="selection",
    kinds={"polars", "parquet"},
    code_version="1",
    deps=[shard_trajectories, shard_inventory],
    automation_condition=REFRESH,
    description="What selection chooses from: raw_dataset plus every scored shard (rows and "
    "trajectories), duplicates dropped; shards scored with an older proxy wait.",
)
def training_pool(
    context: dg.AssetExecutionContext,
    raw_dataset: RawDatasetManifest,
    loss_trajectories: TrajectoriesManifest,
    proxy_checkpoints: ModelManifest,
    artifact_store: ArtifactStoreResource,
) -> dg.Output[PoolManifest]:
    store = artifact_store.store()
    shards = {
        key: read_manifest(store, ShardTrajectoriesManifest, "shard_trajectories", key)
        for key in scored_shards(context.instance)
    }
    pool = stage.make_pool(raw_dataset, loss_trajectories, proxy_checkpoints, shards, store)
    if pool.waiting:  # scored with another proxy: rescored by automation first
        context.log.warning(f"left out until rescored with the current proxy: {pool.waiting}")
    m = pool.manifest
    context.log.info(f"pool: {m.train.rows} rows ({pool.base_rows} base + {len(m.shards)} shards)")
    return dg.Output(
        m,
        data_version=dg.DataVersion(m.train.content_hash[:32] + m.trajectories.content_hash[:32]),
        metadata={
            "dagster/row_count": m.train.rows,
            "base_rows": pool.base_rows,
            "shard_rows": m.train.rows - pool.base_rows,
            "n_shards": len(m.shards),
            "shards": dg.MetadataValue.json(m.shards),
            "shards_waiting_for_rescoring": dg.MetadataValue.json(pool.waiting),
            "lineage": dg.MetadataValue.json(m.lineage),
            **table_ref_metadata("train", m.train),
            **table_ref_metadata("trajectories", m.trajectories),
        },
    )


class ClusterConfig(dg.Config):
    clusters: int = Field(
        SelectionOptions.clusters, description="K (per source when stratified). Paper: 100."
    )
    iterations: int = Field(
        SelectionOptions.kmeans_iterations, description="K-means iterations (faiss)."
    )
    max_train_points: int = Field(
        SelectionOptions.max_train_points,
        description="K-means trains on all points up to this many (seeded sample "
        "beyond it); faiss alone would silently use 256 per centroid.",
    )
    stratify_by: str | None = Field(
        None,
        description="Cluster each value of this raw_dataset column on its own, e.g. "
        "'source' (the official code's per-source mode).",
    )
    steps: list[int] | None = Field(
        None, description="Checkpoint steps that feed the trajectories; empty: all trained ones."
    )
    seed: int = 0

    def options(self) -> SelectionOptions:
        return SelectionOptions(
            clusters=self.clusters,
            kmeans_iterations=self.iterations,
            max_train_points=self.max_train_points,
            stratify_by=self.stratify_by,
            steps=tuple(self.steps) if self.steps else None,
        )


ClusterConfig = profiled(ClusterConfig, "trajectory_clusters")  # the deployment's scale


@dg.asset(
    op_tags=cpu_step_tags(),
    group_name="selection",
    kinds={"faiss", "parquet"},
    code_version="2",
    automation_condition=REFRESH,
    description="S2L's K-means clusters of the loss trajectories: example_id, cluster, distance.",
)
def trajectory_clusters(
    context: dg.AssetExecutionContext,
    config: ClusterConfig,
    training_pool: PoolManifest,
    artifact_store: ArtifactStoreResource,
) -> dg.Output[ClustersManifest]:
    try:
        done = stage.make_clusters(
            training_pool, config.options(), config.seed, artifact_store.store()
        )
    except SelectionInputError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    m, summary = done.manifest, done.summary
    context.log.info(
        f"{summary.clusters} clusters over {m.clusters.rows} examples, trained on "
        f"{summary.trained_on_points} points; inertia {summary.inertia:.2f}"
    )
    return dg.Output(
        m, data_version=dg.DataVersion(m.clusters.content_hash), metadata=clusters_metadata(done)
    )


def clusters_metadata(done: stage.Clusters) -> dict:
    m, summary = done.manifest, done.summary
    curves = cluster_trajectories_png(done.steps, summary.centroids, done.sizes)
    hist = histogram_png(done.sizes, "cluster size", "Cluster sizes")
    return {
        "dagster/row_count": m.clusters.rows,
        "content_hash": m.clusters.content_hash,
        "n_clusters": summary.clusters,
        "inertia": summary.inertia,
        "trained_on_points": summary.trained_on_points,
        "excluded_unscorable": summary.excluded_unscorable,
        "checkpoint_steps": dg.MetadataValue.json(done.steps),
        "centroids": dg.MetadataValue.json(summary.centroids),
        "cluster_trajectories": dg.MetadataValue.md(markdown_image(curves, "trajectories")),
        "cluster_sizes": dg.MetadataValue.md(markdown_image(hist, "sizes")),
        "clusters_path": dg.MetadataValue.path(m.clusters.uri),
        "training_pool": dg.MetadataValue.json(m.pool),
    }


@dg.asset_check(
    asset=trajectory_clusters,
    additional_ins={"training_pool": dg.AssetIn(), "proxy_checkpoints": dg.AssetIn()},
    op_tags=cpu_step_tags(),
    description="S2L's premise on this data: examples in one cluster have more alike gradients "
    "(proxy's last checkpoint, CountSketch) than random pairs; silhouette on a sample. Warns "
    "when they do not.",
)
def clusters_group_similar_gradients(
    trajectory_clusters: ClustersManifest,
    training_pool: PoolManifest,
    proxy_checkpoints: ModelManifest,
    artifact_store: ArtifactStoreResource,
) -> dg.AssetCheckResult:
    report = stage.premise_of_clusters(
        trajectory_clusters, training_pool, proxy_checkpoints, artifact_store.store()
    )
    values = report.to_dict()
    same, within = report.same_source_cosine, report.within_cluster_cosine
    within_text = "- (no cluster had two sampled rows)" if within is None else f"{within:.3f}"
    return dg.AssetCheckResult(
        passed=report.gap is not None and report.gap > 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"gradient cosine within clusters {within_text} vs random "
            f"pairs {report.random_pair_cosine:.3f} (one source: "
            f"{'-' if same is None else f'{same:.3f}'}); "
            f"silhouette {report.silhouette}"
        ),
        metadata={k: v for k, v in values.items() if v is not None},
    )


class SelectionConfig(dg.Config):
    method: str = Field("s2l", description=f"One of: {', '.join(METHODS)}.")
    budget: str = Field("0.3", description="A count ('5000') or a fraction of N ('0.3').")
    seed: int = 0
    steps: list[int] | None = Field(
        None, description="Checkpoints for the baselines; empty: each method's default."
    )
    epoch1_step: int | None = Field(
        None,
        description="learning_percentage: checkpoint ending epoch 1; empty: from the "
        "proxy's training length.",
    )
    lp_variant: str = Field(
        SelectionOptions.lp_variant, description="learning_percentage: lp1 or lp_app."
    )
    embedding_clusters: int = Field(
        SelectionOptions.embedding_clusters,
        description="learning_percentage: K of MiniLM K-means.",
    )
    knn: int = Field(SelectionOptions.knn, description="facility_location: neighbours per point.")
    min_cluster_size: int = Field(
        SelectionOptions.min_cluster_size,
        description="s2l: clusters with fewer members are skipped and only fill a shortfall "
        "(official code: 3); 1 takes every cluster, tiny ones whole.",
    )
    zip_k1: int = Field(SelectionOptions.zip_k1, description="zip: stage 1 candidates.")
    zip_k2: int = Field(SelectionOptions.zip_k2, description="zip: stage 2 candidates kept.")
    zip_k3: int = Field(SelectionOptions.zip_k3, description="zip: rows added per round.")
    nested: bool = Field(
        SelectionOptions.nested,
        description="random, s2l: subsets that nest across budgets (one seed's learning curve).",
    )

    def changes(self) -> dict:
        """What selection sets on top of the clustering's options."""
        return {
            "steps": tuple(self.steps) if self.steps else None,
            "epoch1_step": self.epoch1_step,
            "lp_variant": self.lp_variant,
            "embedding_clusters": self.embedding_clusters,
            "knn": self.knn,
            "min_cluster_size": self.min_cluster_size,
            "zip_k1": self.zip_k1,
            "zip_k2": self.zip_k2,
            "zip_k3": self.zip_k3,
            "nested": self.nested,
        }


SelectionConfig = profiled(SelectionConfig, "selected_subset")  # the deployment's scale

# What choosing cost, beside the training it saves: the selector's CPU time, and for the
# methods that run the proxy once more, that pass's CPU time and FLOPs.
SELECTION_COST = ("selection_cpu_seconds", "model_cpu_seconds", "selection_flops")


@dg.asset(
    op_tags=cpu_step_tags(),
    group_name="selection",
    kinds={"polars", "parquet"},
    code_version="2",
    automation_condition=REFRESH,
    description="The chosen subset: the selected rows of training_pool (all columns) + cluster.",
)
def selected_subset(
    context: dg.AssetExecutionContext,
    config: SelectionConfig,
    training_pool: PoolManifest,
    trajectory_clusters: ClustersManifest,
    proxy_checkpoints: ModelManifest,
    artifact_store: ArtifactStoreResource,
    mlflow: MlflowTracking,
) -> dg.Output[SubsetManifest]:
    try:
        done = stage.make_subset(
            training_pool,
            trajectory_clusters,
            proxy_checkpoints,
            config.method,
            parse_budget(config.budget),
            config.seed,
            artifact_store.store(),
            **config.changes(),
        )
    except (SelectionInputError, ValueError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    m = done.manifest
    context.log.info(f"{m.method}: {m.subset.rows} of {done.pool_rows} examples selected")
    pool_hash = training_pool.train.content_hash
    with mlflow.run(context, "selected_subset", {"training_pool": pool_hash}) as mt:
        mt.set_tags({"selection_method": m.method})
        log_lineage(mt, m.lineage)
        mt.log_params({"method": m.method, "budget": m.budget, "seed": m.seed})
        cost = {k: m.info[k] for k in SELECTION_COST if m.info.get(k) is not None}
        mt.log_metrics({"selected_rows": m.subset.rows, "pool_rows": done.pool_rows, **cost})
        m = dataclasses.replace(m, mlflow_run_id=mt.run_id)
        meta_ml = mlflow_metadata(mt)
    return dg.Output(
        m,
        data_version=dg.DataVersion(m.subset.content_hash),
        metadata={**subset_metadata(done, m), **meta_ml},
    )


UNSCORABLE = "unscorable"  # the per-cluster row of pool rows without a loss trajectory


def labelled_clusters(by_cluster: pl.DataFrame) -> pl.DataFrame:
    """Pool rows with no loss trajectory have no cluster: a row named so, not a blank one."""
    return by_cluster.with_columns(pl.col("cluster").cast(pl.String).fill_null(UNSCORABLE))


def subset_metadata(done: stage.Subset, m: SubsetManifest) -> dict:
    by_source, by_cluster = done.by_source, labelled_clusters(done.by_cluster)
    bars = compare_bars_png(
        by_source["source"].to_list(),
        by_source["full_share"].to_list(),
        by_source["subset_share"].to_list(),
        "Rows per source",
    )
    cbars = compare_bars_png(
        [str(c) for c in by_cluster["cluster"].to_list()],
        by_cluster["full_share"].to_list(),
        by_cluster["subset_share"].to_list(),
        "Rows per cluster",
    )
    return {
        "dagster/row_count": m.subset.rows,
        "content_hash": m.subset.content_hash,
        "method": m.method,
        "budget": m.budget,
        "seed": m.seed,
        "selection_info": dg.MetadataValue.json(m.info),
        "per_source": md(by_source),
        "per_source_chart": dg.MetadataValue.md(markdown_image(bars, "per source")),
        "per_cluster": md(by_cluster, 200),
        "per_cluster_chart": dg.MetadataValue.md(markdown_image(cbars, "per cluster")),
        "subset_path": dg.MetadataValue.path(m.subset.uri),
        "lineage": dg.MetadataValue.json(m.lineage),
    }
