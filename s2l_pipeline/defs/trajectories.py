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
from ..core.stages.manifests import (
    ModelManifest,
    RawDatasetManifest,
    ScoredUnit,
    ScoringPlan,
    ScoringWork,
    ShardManifest,
    ShardTrajectoriesManifest,
    TrajectoriesManifest,
)
from ..core.stages.trajectories import (
    Assembled,
    ScoringOptions,
    assemble_scores,
    plan_scoring,
    score_shard,
    score_work,
)
from ..core.support.plots import loss_curve_png, markdown_image
from ..core.support.tables import read_table
from ..core.trajectories import CheckpointIntegrityError, TooManyUnscorable, loss_columns
from .automation import REFRESH
from .check_groups import selected_results
from .data import SHARDS, check_result
from .executors import cpu_step_tags, gpu_retry_policy, gpu_step_tags, on_gpu
from .metadata import md
from .profiles import profiled
from .resources import ArtifactStoreResource, MlflowTracking, mlflow_metadata
from .runtime import retried_on_error


class ScoringConfig(dg.Config):
    shard_rows: int = Field(
        ScoringOptions.shard_rows,
        description="Rows per scoring step; smaller shards fan out to more workers.",
    )
    token_budget: int | None = Field(
        None, description="Padded tokens per batch; empty: 8K on CPU, 64K on CUDA."
    )
    max_length: int | None = Field(
        None, description="Tokens per example; empty: the proxy's training max_length."
    )
    max_unscorable_share: float = Field(
        ScoringOptions.max_unscorable_share,
        description="Fail before scoring when more rows than this share have no response "
        "token within max_length (they could never be selected).",
    )

    def options(self) -> ScoringOptions:
        return ScoringOptions(
            self.shard_rows, self.token_budget, self.max_length, self.max_unscorable_share
        )


ScoringConfig = profiled(ScoringConfig, "loss_trajectories.plan_scoring")  # the deployment's scale


@dg.op(
    name="plan_scoring",
    tags=cpu_step_tags(),
    out={"units": dg.DynamicOut(ScoringWork), "base": dg.Out(ScoringPlan)},
    description="Plan the (checkpoint, shard) scoring units and record per-example token facts.",
)
def plan_scoring_op(
    context: dg.OpExecutionContext,
    config: ScoringConfig,
    raw_dataset: RawDatasetManifest,
    proxy_checkpoints: ModelManifest,
    artifact_store: ArtifactStoreResource,
):
    try:
        found = plan_scoring(
            raw_dataset, proxy_checkpoints, config.options(), artifact_store.store()
        )
    except TooManyUnscorable as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    if found.unscorable:
        context.log.warning(
            f"{found.unscorable} of {found.rows} rows have no response token within max_length "
            f"{found.max_length}: they get no loss and no selector (random included) will draw them"
        )
    context.log.info(f"{len(found.work)} scoring units over {found.rows} examples")
    yield dg.Output(found.plan, output_name="base")
    for work in found.work:
        yield dg.DynamicOutput(work, mapping_key=work.unit.mapping_key, output_name="units")


@dg.op(
    tags=gpu_step_tags(),
    retry_policy=gpu_retry_policy(),
    pool="gpu",
    description="Score one shard of rows at one checkpoint (skipped if already stored); "
    "retried on errors, never after a cancel.",
)
@on_gpu
def score_trajectory_unit(
    context: dg.OpExecutionContext, work: ScoringWork, artifact_store: ArtifactStoreResource
) -> dg.Output[ScoredUnit]:
    with retried_on_error():
        try:
            scored = score_work(work, artifact_store.store(), context.log.info)
        except CheckpointIntegrityError as exc:  # not transient: retrying cannot help
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
    done = "already scored at" if scored.reused else "scored into"
    context.log.info(f"{work.unit.mapping_key}: {done} {scored.uri}")
    return scored


@dg.op(
    tags=cpu_step_tags(),
    description="Join every unit's losses into the wide trajectory table.",
)
def assemble_trajectories(
    context: dg.OpExecutionContext,
    scored: list[ScoredUnit],
    base: ScoringPlan,
    artifact_store: ArtifactStoreResource,
    mlflow: MlflowTracking,
) -> dg.Output[TrajectoriesManifest]:
    done = assemble_scores(base, scored, artifact_store.store())
    png = loss_curve_png(done.summary)
    with mlflow.run(context, "loss_trajectories", {"raw_dataset": base.train.content_hash}) as mt:
        mt.log_metrics(
            {
                f"mean_loss_step_{r['step']}": r["mean"]
                for r in done.summary.iter_rows(named=True)
                if np.isfinite(r["mean"])
            }
        )
        mt.log_metrics({"n_truncated": done.truncated, "n_examples": done.rows})
        mt.client.log_image(mt.run_id, _image(png), "loss_per_checkpoint.png")
        meta_ml = mlflow_metadata(mt)
    context.log.info(
        f"{len(scored)} units ({done.reused} reused); {done.truncated} truncated examples"
    )
    ref = done.manifest.trajectories
    return dg.Output(
        done.manifest,
        data_version=dg.DataVersion(ref.content_hash),
        metadata={**_assembled_metadata(done, len(scored), png), **meta_ml},
    )


def _assembled_metadata(done: Assembled, units: int, png: bytes) -> dict:
    ref = done.manifest.trajectories
    return {
        "dagster/row_count": done.rows,
        "content_hash": ref.content_hash,
        "checkpoints": done.summary.height,
        "n_truncated": done.truncated,
        "n_no_response_tokens": done.unscorable,
        "units_scored": units - done.reused,
        "units_reused": done.reused,
        "loss_per_checkpoint": dg.MetadataValue.md(markdown_image(png, "loss")),
        "loss_summary": md(done.summary.with_columns(pl.exclude("step").round(4))),
        "trajectories_path": dg.MetadataValue.path(ref.uri),
    }


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
    units, base = plan_scoring_op(raw_dataset, proxy_checkpoints)
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
    done = score_shard(data_shard, proxy_checkpoints, loss_trajectories, artifact_store.store())
    context.log.info(f"{context.partition_key}: scored {done.scored} rows, reused {done.reused}")
    ref = done.manifest.trajectories
    return dg.Output(
        done.manifest,
        data_version=dg.DataVersion(ref.content_hash),
        metadata={
            "dagster/row_count": ref.rows,
            "rows_scored": done.scored,
            "rows_reused": done.reused,
            "proxy_fingerprint": proxy_checkpoints.fingerprint,
            "trajectories_path": dg.MetadataValue.path(ref.uri),
        },
    )


def _load(manifest: TrajectoriesManifest, artifact_store: ArtifactStoreResource):
    return read_table(manifest.trajectories, artifact_store.store())


TRAJECTORY_CHECKS = [
    dg.AssetCheckSpec(
        "trajectories_cover_dataset",
        asset="loss_trajectories",
        blocking=True,
        additional_deps=["raw_dataset"],
        description="Every example_id of raw_dataset appears exactly once.",
    ),
    dg.AssetCheckSpec(
        "trajectories_finite",
        asset="loss_trajectories",
        blocking=True,
        description="No NaN or inf loss outside rows flagged truncated.",
    ),
    dg.AssetCheckSpec(
        "trajectories_loss_decreases",
        asset="loss_trajectories",
        description="Mean loss falls from the first to the last checkpoint (warns if not).",
    ),
]


@dg.multi_asset_check(specs=TRAJECTORY_CHECKS, can_subset=True, op_tags=cpu_step_tags())
def loss_trajectories_checks(
    context: dg.AssetCheckExecutionContext,
    loss_trajectories: TrajectoriesManifest,
    raw_dataset: RawDatasetManifest,
    artifact_store: ArtifactStoreResource,
):
    """The trajectory table's checks, in one step (check_groups.py)."""
    traj = _load(loss_trajectories, artifact_store)
    losses = loss_columns(traj)

    def covers() -> dg.AssetCheckResult:
        train = read_table(raw_dataset.train, artifact_store.store())
        finding = check_trajectory_coverage(train["example_id"], traj)
        return check_result(finding, dg.AssetCheckSeverity.ERROR)

    yield from selected_results(
        context,
        "loss_trajectories",
        {
            "trajectories_cover_dataset": covers,
            "trajectories_finite": lambda: check_result(
                check_trajectory_finite(traj, losses), dg.AssetCheckSeverity.ERROR
            ),
            "trajectories_loss_decreases": lambda: check_result(
                check_loss_decreases(traj, losses), dg.AssetCheckSeverity.WARN
            ),
        },
    )
