"""Selection: the training pool, the trajectory clusters and the chosen subset."""

import dagster as dg
from pydantic import Field

from ..core.manifests import (
    ClustersManifest,
    ModelManifest,
    PoolManifest,
    RawDatasetManifest,
    ShardTrajectoriesManifest,
    SubsetManifest,
    TrajectoriesManifest,
)
from ..core.selection import (
    METHODS,
    SelectionInputError,
    SelectionOptions,
    choose,
    cluster_table,
    parse_budget,
)
from ..core.selection.common import pick_steps
from ..core.selection.diagnostics import premise_on_pool
from ..core.selection.learning_percentage import epoch1_from_schedule
from ..core.selection.pool import assemble_pool
from ..core.selection.report import compare_counts
from ..core.support.hashing import table_hash
from ..core.support.lineage import lineage_tags, pool_lineage, subset_lineage
from ..core.support.plots import (
    cluster_trajectories_png,
    compare_bars_png,
    histogram_png,
    markdown_image,
)
from ..core.support.tables import read_table, write_table
from ..core.trajectories import step_of, steps_of
from .automation import REFRESH
from .data import scored_shards, shard_inventory
from .executors import cpu_step_tags
from .metadata import md, table_ref_metadata
from .profiles import profiled
from .resources import ArtifactStoreResource, MlflowTracking, mlflow_metadata, read_manifest
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
    proxy_fp = proxy_checkpoints.fingerprint
    base = read_table(raw_dataset.train, store)
    base_traj = read_table(loss_trajectories.trajectories, store)
    parts, shards, waiting = [], {}, []
    for key in scored_shards(context.instance):
        m = read_manifest(store, ShardTrajectoriesManifest, "shard_trajectories", key)
        if m is None or m.proxy_fingerprint != proxy_fp:
            waiting.append(key)  # scored with another proxy: rescored by automation first
            continue
        parts.append((read_table(m.train, store), read_table(m.trajectories, store)))
        shards[key] = m.train.content_hash
    train, traj = assemble_pool(base, base_traj, parts)
    version = table_hash(train)
    train_ref = write_table(train, store, f"training_pool/{version[:16]}/train.parquet", version)
    traj_ref = write_table(
        traj, store, f"training_pool/{version[:16]}/trajectories.parquet", table_hash(traj)
    )
    if waiting:
        context.log.warning(f"left out until rescored with the current proxy: {waiting}")
    lineage = pool_lineage(
        raw_dataset.train.content_hash, shards, version, traj_ref.content_hash, proxy_fp
    )
    n_base = base.height
    context.log.info(f"pool: {train.height} rows ({n_base} base + {len(shards)} shards)")
    return dg.Output(
        PoolManifest(train=train_ref, trajectories=traj_ref, shards=shards, lineage=lineage),
        data_version=dg.DataVersion(version[:32] + traj_ref.content_hash[:32]),
        metadata={
            "dagster/row_count": train.height,
            "base_rows": n_base,
            "shard_rows": train.height - n_base,
            "n_shards": len(shards),
            "shards": dg.MetadataValue.json(shards),
            "shards_waiting_for_rescoring": dg.MetadataValue.json(waiting),
            "lineage": dg.MetadataValue.json(lineage),
            **table_ref_metadata("train", train_ref),
            **table_ref_metadata("trajectories", traj_ref),
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
    store = artifact_store.store()
    traj = read_table(training_pool.trajectories, store)
    data = read_table(training_pool.train, store)
    opts = config.options()
    try:
        table, summary = cluster_table(traj, data, config.seed, opts)
    except SelectionInputError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    version = table_hash(table)
    ref = write_table(table, store, f"trajectory_clusters/{version[:16]}/clusters.parquet", version)
    sizes = table.group_by("cluster").len().sort("cluster")
    steps = [step_of(c) for c in pick_steps(traj, opts.steps, "trained")]
    curves = cluster_trajectories_png(steps, summary["centroids"], sizes["len"].to_list())
    hist = histogram_png(sizes["len"].to_list(), "cluster size", "Cluster sizes")
    context.log.info(
        f"{summary['clusters']} clusters over {table.height} examples, trained on "
        f"{summary['trained_on_points']} points; inertia {summary['inertia']:.2f}"
    )
    manifest = ClustersManifest(
        clusters=ref,
        options={**opts.__dict__, "steps": steps, "seed": config.seed},
        n_clusters=summary["clusters"],
        pool=training_pool.lineage,
    )
    return dg.Output(
        manifest,
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": table.height,
            "content_hash": version,
            "n_clusters": summary["clusters"],
            "inertia": summary["inertia"],
            "trained_on_points": summary["trained_on_points"],
            "excluded_unscorable": summary["excluded_unscorable"],
            "checkpoint_steps": dg.MetadataValue.json(steps),
            "centroids": dg.MetadataValue.json(summary["centroids"]),
            "cluster_trajectories": dg.MetadataValue.md(markdown_image(curves, "trajectories")),
            "cluster_sizes": dg.MetadataValue.md(markdown_image(hist, "sizes")),
            "clusters_path": dg.MetadataValue.path(ref.uri),
            "training_pool": dg.MetadataValue.json(training_pool.lineage),
        },
    )


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
    store = artifact_store.store()
    steps = tuple(trajectory_clusters.options.get("steps") or ()) or None
    report = premise_on_pool(
        read_table(training_pool.trajectories, store),
        read_table(training_pool.train, store),
        read_table(trajectory_clusters.clusters, store),
        store.fetch_dir(proxy_checkpoints.final.uri),
        proxy_checkpoints.train["max_length"],
        steps=steps,
        seed=int(trajectory_clusters.options.get("seed", 0)),
    )
    values = report.to_dict()
    same = report.same_source_cosine
    return dg.AssetCheckResult(
        passed=report.gap > 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"gradient cosine within clusters {report.within_cluster_cosine:.3f} vs random "
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


SelectionConfig = profiled(SelectionConfig, "selected_subset")  # the deployment's scale


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
    store = artifact_store.store()
    data = read_table(training_pool.train, store)
    traj = read_table(training_pool.trajectories, store)
    clusters = read_table(trajectory_clusters.clusters, store)
    copts = trajectory_clusters.options
    opts = SelectionOptions(
        clusters=copts["clusters"],
        stratify_by=copts["stratify_by"],
        steps=tuple(config.steps) if config.steps else None,
        epoch1_step=config.epoch1_step
        or epoch1_from_schedule(
            proxy_checkpoints.final.step,
            proxy_checkpoints.train["epochs"],
            steps_of(traj),
        ),
        lp_variant=config.lp_variant,
        embedding_clusters=config.embedding_clusters,
        knn=config.knn,
        min_cluster_size=config.min_cluster_size,
    )
    try:
        chosen, info = choose(
            config.method, traj, data, parse_budget(config.budget), config.seed, opts, clusters
        )
    except (SelectionInputError, ValueError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    subset = data.join(chosen.select("example_id"), on="example_id", how="semi")
    subset = subset.join(
        clusters.select("example_id", "cluster"), on="example_id", how="left", maintain_order="left"
    )
    version = table_hash(subset)
    ref = write_table(subset, store, f"selected_subset/{version[:16]}/subset.parquet", version)
    full = data.join(clusters.select("example_id", "cluster"), on="example_id", how="left")
    by_source = compare_counts(full, subset, "source")
    by_cluster = compare_counts(full, subset, "cluster")
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
    context.log.info(f"{config.method}: {subset.height} of {data.height} examples selected")
    lineage = subset_lineage(
        training_pool, proxy_checkpoints, trajectory_clusters, config.method, info, version
    )
    with mlflow.run(
        context, "selected_subset", {"training_pool": training_pool.lineage["pool"]}
    ) as mt:
        mt.set_tags({"selection_method": config.method, **lineage_tags(lineage)})
        mt.log_params({"method": config.method, "budget": info["budget"], "seed": config.seed})
        mt.log_metrics({"selected_rows": subset.height, "pool_rows": data.height})
        mt.log_dict(lineage, "lineage.json")
        meta_ml = mlflow_metadata(mt)
    manifest = SubsetManifest(
        subset=ref,
        method=config.method,
        budget=info["budget"],
        seed=config.seed,
        info={k: v for k, v in info.items() if k != "centroids"},
        lineage=lineage,
        mlflow_run_id=meta_ml["mlflow_run_id"].value,
    )
    return dg.Output(
        manifest,
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": subset.height,
            "content_hash": version,
            "method": config.method,
            "budget": info["budget"],
            "seed": config.seed,
            "selection_info": dg.MetadataValue.json(manifest.info),
            "per_source": md(by_source),
            "per_source_chart": dg.MetadataValue.md(markdown_image(bars, "per source")),
            "per_cluster": md(by_cluster, 200),
            "per_cluster_chart": dg.MetadataValue.md(markdown_image(cbars, "per cluster")),
            "subset_path": dg.MetadataValue.path(ref.uri),
            "lineage": dg.MetadataValue.json(lineage),
            **meta_ml,
        },
    )
