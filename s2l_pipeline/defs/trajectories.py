"""Loss trajectories: the base table scored as (checkpoint x shard) steps, new shards scored
incrementally, and the checks on both."""

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from ..core.checks import (
    check_loss_decreases,
    check_trajectory_coverage,
    check_trajectory_finite,
)
from ..core.manifests import (
    ModelManifest,
    RawDatasetManifest,
    ShardManifest,
    ShardTrajectoriesManifest,
    TrajectoriesManifest,
)
from ..core.support.hashing import table_hash
from ..core.support.plots import loss_curve_png, markdown_image
from ..core.support.tables import TableRef, read_table, write_table
from ..core.trajectories import (
    CheckpointIntegrityError,
    ScoringUnit,
    TooManyUnscorable,
    assemble,
    check_unscorable,
    incremental_trajectories,
    loss_columns,
    loss_summary,
    plan_units,
    score_rows,
    score_unit,
    token_facts,
)
from .automation import REFRESH
from .data import SHARDS, check_result
from .executors import cpu_step_tags, gpu_retry_policy, gpu_step_tags, on_gpu
from .metadata import md
from .profiles import profiled
from .resources import ArtifactStoreResource, MlflowTracking, mlflow_metadata
from .runtime import retried_on_error


class ScoringConfig(dg.Config):
    shard_rows: int = Field(
        1_000_000, description="Rows per scoring step; smaller shards fan out to more workers."
    )
    token_budget: int | None = Field(
        None, description="Padded tokens per batch; empty: 8K on CPU, 64K on CUDA."
    )
    max_length: int | None = Field(
        None, description="Tokens per example; empty: the proxy's training max_length."
    )
    max_unscorable_share: float = Field(
        0.05,
        description="Fail before scoring when more rows than this share have no response "
        "token within max_length (they could never be selected).",
    )


ScoringConfig = profiled(ScoringConfig, "loss_trajectories.plan_scoring")  # the deployment's scale


@dg.op(
    tags=cpu_step_tags(),
    out={"units": dg.DynamicOut(dict), "base": dg.Out(dict)},
    description="Plan the (checkpoint, shard) scoring units and record per-example token facts.",
)
def plan_scoring(
    context: dg.OpExecutionContext,
    config: ScoringConfig,
    raw_dataset: RawDatasetManifest,
    proxy_checkpoints: ModelManifest,
    artifact_store: ArtifactStoreResource,
):
    store = artifact_store.store()
    train_ref = raw_dataset.train
    train = read_table(train_ref, store)
    max_length = config.max_length or proxy_checkpoints.train["max_length"]
    first = proxy_checkpoints.checkpoints[0]
    base = token_facts(train, store.fetch_dir(first.uri), max_length)
    try:
        n_unscorable = check_unscorable(base, config.max_unscorable_share, max_length)
    except TooManyUnscorable as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    if n_unscorable:
        context.log.warning(
            f"{n_unscorable} of {base.height} rows have no response token within max_length "
            f"{max_length}: they get no loss and no selector (random included) will draw them"
        )
    base_hash = table_hash(base)
    base_ref = write_table(
        base, store, f"loss_trajectories/base/{base_hash[:16]}.parquet", base_hash
    )
    units = plan_units(
        proxy_checkpoints.checkpoint_records(),
        train.height,
        config.shard_rows,
        train_ref.content_hash,
        max_length,
        config.token_budget,
    )
    context.log.info(f"{len(units)} scoring units over {train.height} examples")
    yield dg.Output(
        {
            "base": base_ref.to_dict(),
            "train": train_ref.to_dict(),
            "proxy_fingerprint": proxy_checkpoints.fingerprint,
        },
        output_name="base",
    )
    for unit in units:
        yield dg.DynamicOutput(
            {"unit": unit.to_dict(), "train": train_ref.to_dict()},
            mapping_key=unit.mapping_key,
            output_name="units",
        )


@dg.op(
    tags=gpu_step_tags(),
    retry_policy=gpu_retry_policy(),
    pool="gpu",
    description="Score one shard of rows at one checkpoint (skipped if already stored); "
    "retried on errors, never after a cancel.",
)
@on_gpu
def score_trajectory_unit(
    context: dg.OpExecutionContext, work: dict, artifact_store: ArtifactStoreResource
) -> dg.Output[dict]:
    store = artifact_store.store()
    unit = ScoringUnit.from_dict(work["unit"])
    key = f"loss_trajectories/units/{unit.key}.parquet"
    if store.exists(key):
        context.log.info(f"{unit.mapping_key}: already scored at {store.uri(key)}")
        return {"step": unit.step, "uri": store.uri(key), "reused": True}
    with retried_on_error():
        rows = read_table(TableRef.from_dict(work["train"]), store).slice(
            unit.start, unit.stop - unit.start
        )
        try:
            scores = score_unit(unit, rows, store, context.log.info)
        except CheckpointIntegrityError as exc:  # not transient: retrying cannot help
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        ref = write_table(scores, store, key)
    context.log.info(f"{unit.mapping_key}: scored {ref.rows} rows")
    return {"step": unit.step, "uri": ref.uri, "reused": False}


@dg.op(
    tags=cpu_step_tags(),
    description="Join every unit's losses into the wide trajectory table.",
)
def assemble_trajectories(
    context: dg.OpExecutionContext,
    scored: list[dict],
    base: dict,
    artifact_store: ArtifactStoreResource,
    mlflow: MlflowTracking,
) -> dg.Output[TrajectoriesManifest]:
    store = artifact_store.store()
    base_df = read_table(TableRef.from_dict(base["base"]), store)
    by_step: dict[int, list[pl.DataFrame]] = {}
    for s in sorted(scored, key=lambda s: (s["step"], s["uri"])):
        by_step.setdefault(s["step"], []).append(read_table(s["uri"], store))
    table = assemble(base_df, by_step)
    version = table_hash(table)
    ref = write_table(
        table, store, f"loss_trajectories/{version[:16]}/trajectories.parquet", version
    )
    summary = loss_summary(table)
    png = loss_curve_png(summary)
    n_trunc = int(table["truncated"].sum())
    n_unscorable = int((table["n_response_tokens"] == 0).sum())
    with mlflow.run(
        context, "loss_trajectories", {"raw_dataset": base["train"]["content_hash"]}
    ) as mt:
        mt.log_metrics(
            {
                f"mean_loss_step_{r['step']}": r["mean"]
                for r in summary.iter_rows(named=True)
                if np.isfinite(r["mean"])
            }
        )
        mt.log_metrics({"n_truncated": n_trunc, "n_examples": table.height})
        mt.client.log_image(mt.run_id, _image(png), "loss_per_checkpoint.png")
        meta_ml = mlflow_metadata(mt)
    reused = sum(1 for s in scored if s["reused"])
    context.log.info(f"{len(scored)} units ({reused} reused); {n_trunc} truncated examples")
    return dg.Output(
        TrajectoriesManifest(
            trajectories=ref,
            steps=summary["step"].to_list(),
            proxy_fingerprint=base["proxy_fingerprint"],
        ),
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": table.height,
            "content_hash": version,
            "checkpoints": summary.height,
            "n_truncated": n_trunc,
            "n_no_response_tokens": n_unscorable,
            "units_scored": len(scored) - reused,
            "units_reused": reused,
            "loss_per_checkpoint": dg.MetadataValue.md(markdown_image(png, "loss")),
            "loss_summary": md(summary.with_columns(pl.exclude("step").round(4))),
            "trajectories_path": dg.MetadataValue.path(ref.uri),
            **meta_ml,
        },
    )


def _image(png: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png))


@dg.graph_asset(
    group_name="proxy",
    automation_condition=REFRESH,
    kinds={"pytorch", "parquet"},
    description="Every example's mean response loss at every proxy checkpoint: example_id, "
    "loss_step_<step>..., n_response_tokens, truncated.",
)
def loss_trajectories(
    raw_dataset: RawDatasetManifest, proxy_checkpoints: ModelManifest
) -> TrajectoriesManifest:
    units, base = plan_scoring(raw_dataset, proxy_checkpoints)
    scored = units.map(score_trajectory_unit)
    return assemble_trajectories(scored.collect(), base)


@dg.asset(
    op_tags=gpu_step_tags(),
    retry_policy=gpu_retry_policy(),
    pool="gpu",
    group_name="proxy",
    kinds={"pytorch", "parquet"},
    code_version="1",
    partitions_def=SHARDS,
    automation_condition=REFRESH,
    description="Loss trajectories of one shard at the existing proxy checkpoints; rows already "
    "scored with this proxy (in the base table or an earlier run) are reused, not rescored.",
)
@on_gpu
def shard_trajectories(
    context: dg.AssetExecutionContext,
    data_shard: ShardManifest,
    proxy_checkpoints: ModelManifest,
    loss_trajectories: TrajectoriesManifest,
    artifact_store: ArtifactStoreResource,
) -> dg.Output[ShardTrajectoriesManifest]:
    store = artifact_store.store()
    rows = read_table(data_shard.train, store)
    proxy_fp = proxy_checkpoints.fingerprint
    key = f"shard_trajectories/{proxy_fp}/{data_shard.train.content_hash[:16]}.parquet"
    known = []
    if store.exists(key):  # this shard's content was scored with this proxy before
        known.append(read_table(store.uri(key), store))
    if loss_trajectories.proxy_fingerprint == proxy_fp:
        base = read_table(loss_trajectories.trajectories, store)
        known.append(base.join(rows.select("example_id"), on="example_id", how="semi"))
    max_length = proxy_checkpoints.train["max_length"]
    table, n_scored, n_reused = incremental_trajectories(
        rows,
        pl.concat(known, how="vertical_relaxed").unique("example_id") if known else None,
        lambda todo: score_rows(todo, proxy_checkpoints.checkpoint_records(), store, max_length),
    )
    ref = write_table(table, store, key, table_hash(table))
    context.log.info(f"{context.partition_key}: scored {n_scored} rows, reused {n_reused}")
    return dg.Output(
        ShardTrajectoriesManifest(
            trajectories=ref,
            train=data_shard.train,
            shard=context.partition_key,
            proxy_fingerprint=proxy_fp,
        ),
        data_version=dg.DataVersion(ref.content_hash),
        metadata={
            "dagster/row_count": table.height,
            "rows_scored": n_scored,
            "rows_reused": n_reused,
            "proxy_fingerprint": proxy_fp,
            "trajectories_path": dg.MetadataValue.path(ref.uri),
        },
    )


def _load(manifest: TrajectoriesManifest, artifact_store: ArtifactStoreResource):
    return read_table(manifest.trajectories, artifact_store.store())


@dg.asset_check(
    op_tags=cpu_step_tags(),
    asset="loss_trajectories",
    blocking=True,
    additional_ins={"raw_dataset": dg.AssetIn()},
    description="Every example_id of raw_dataset appears exactly once.",
)
def trajectories_cover_dataset(
    loss_trajectories: TrajectoriesManifest,
    raw_dataset: RawDatasetManifest,
    artifact_store: ArtifactStoreResource,
) -> dg.AssetCheckResult:
    train = read_table(raw_dataset.train, artifact_store.store())
    finding = check_trajectory_coverage(
        train["example_id"], _load(loss_trajectories, artifact_store)
    )
    return check_result(finding, dg.AssetCheckSeverity.ERROR)


@dg.asset_check(
    op_tags=cpu_step_tags(),
    asset="loss_trajectories",
    blocking=True,
    description="No NaN or inf loss outside rows flagged truncated.",
)
def trajectories_finite(
    loss_trajectories: TrajectoriesManifest, artifact_store: ArtifactStoreResource
) -> dg.AssetCheckResult:
    traj = _load(loss_trajectories, artifact_store)
    return check_result(
        check_trajectory_finite(traj, loss_columns(traj)), dg.AssetCheckSeverity.ERROR
    )


@dg.asset_check(
    op_tags=cpu_step_tags(),
    asset="loss_trajectories",
    description="Mean loss falls from the first to the last checkpoint (warns if not).",
)
def trajectories_loss_decreases(
    loss_trajectories: TrajectoriesManifest, artifact_store: ArtifactStoreResource
) -> dg.AssetCheckResult:
    traj = _load(loss_trajectories, artifact_store)
    return check_result(check_loss_decreases(traj, loss_columns(traj)), dg.AssetCheckSeverity.WARN)
