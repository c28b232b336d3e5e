"""Sensors and schedules: new shards in, proxy retraining by policy, re-selection on a cron."""

import json

import dagster as dg

from ..core.data.shards import (
    ShardCursor,
    ShardRejected,
    list_shards,
    load_shard,
    retrain_due,
    run_key,
    shard_version,
)
from ..core.stages.manifests import ModelManifest, RawDatasetManifest, ShardManifest, read_manifest
from .automation import RetrainPolicy, reselect_cron
from .data import SHARDS, data_shard, inventory_observation, materialized_shards
from .jobs import proxy_retrain_job, reselect_job
from .proxy import proxy_checkpoints
from .resources import (
    ArtifactStoreResource,
    MlflowTracking,
    ShardSourceResource,
)
from .trajectories import shard_trajectories

REJECTED_SHARDS_KEY = "data_shard/_rejected_shards.json"


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    # The daemon refuses RunRequests from a sensor that names no target.
    asset_selection=[data_shard, shard_trajectories],
    description="Registers each new or changed shard under the shard root as a partition and "
    "requests its ingest + scoring run (one run per shard version); bad shards are refused "
    "with their reason, the others go on.",
)
def shard_sensor(
    context: dg.SensorEvaluationContext,
    shard_source: ShardSourceResource,
    artifact_store: ArtifactStoreResource,
) -> dg.SensorResult:
    cursor = ShardCursor.parse(context.cursor)
    registered = set(context.instance.get_dynamic_partitions(SHARDS.name))
    requests, new_keys = [], []
    for key, uri in list_shards(shard_source.root, shard_source.endpoint_url).items():
        version = shard_version(uri, shard_source.endpoint_url)
        if cursor.versions.get(key) == version:
            continue
        if cursor.rejected.get(key, {}).get("version") == version:
            continue
        try:
            load_shard(uri, shard_source.endpoint_url, shard_source.max_rejected_share)
        except ShardRejected as exc:
            cursor.rejected[key] = {"version": version, "uri": uri, "reason": str(exc)}
            context.log.warning(f"shard {key} refused: {exc}")
            continue
        cursor.rejected.pop(key, None)
        if key not in registered:
            new_keys.append(key)
        requests.append(
            dg.RunRequest(
                run_key=run_key(key, version),
                partition_key=key,
                asset_selection=[data_shard.key, shard_trajectories.key],
                tags={"s2l/shard_version": version},
            )
        )
        cursor.versions[key] = version
    artifact_store.store().write_text(
        REJECTED_SHARDS_KEY, json.dumps(cursor.rejected, indent=1, sort_keys=True)
    )
    changed = cursor.dump() != (context.cursor or ShardCursor().dump())
    return dg.SensorResult(
        asset_events=[inventory_observation(cursor)] if changed else [],
        run_requests=requests,
        dynamic_partitions_requests=[SHARDS.build_add_request(new_keys)] if new_keys else [],
        cursor=cursor.dump(),
        skip_reason=None if requests else f"no new shards ({len(cursor.rejected)} refused)",
    )


def pool_rows(instance: dg.DagsterInstance, store) -> int:
    """Rows the proxy could train on now: raw_dataset plus every materialized shard."""
    raw = read_manifest(store, RawDatasetManifest, "raw_dataset")
    rows = raw.train.rows if raw else 0
    for key in materialized_shards(instance):
        m = read_manifest(store, ShardManifest, "data_shard", key)
        rows += m.train.rows if m else 0
    return rows


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    asset_selection=[proxy_checkpoints],
    description="Retrains the proxy once rows it never saw reach the policy's share of the pool "
    "(RetrainPolicy.new_data_share).",
)
def proxy_retrain_sensor(
    context: dg.SensorEvaluationContext,
    retrain_policy: RetrainPolicy,
    artifact_store: ArtifactStoreResource,
):
    store = artifact_store.store()
    proxy = read_manifest(store, ModelManifest, "proxy_checkpoints")
    if proxy is None:
        return dg.SkipReason("no proxy yet: materialize proxy_checkpoints first")
    trained = proxy.trained_on.rows if proxy.trained_on else proxy.n_examples
    total = pool_rows(context.instance, store)
    due, reason = retrain_due(trained, total, retrain_policy.new_data_share)
    context.log.info(reason)
    if not due:
        return dg.SkipReason(reason)
    return dg.RunRequest(
        run_key=f"proxy-retrain:{total}",
        tags={"s2l/retrain_reason": reason},
    )


reselection_schedule = dg.ScheduleDefinition(
    name="reselection_schedule",
    job=reselect_job,
    cron_schedule=reselect_cron(),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Re-selection at a fixed rhythm (S2L_RESELECT_CRON), for users who prefer it "
    "to declarative automation.",
)


proxy_retrain_schedule = dg.ScheduleDefinition(
    name="proxy_retrain_schedule",
    job=proxy_retrain_job,
    cron_schedule=RetrainPolicy().cron,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain the proxy on a cron (S2L_PROXY_RETRAIN_CRON); downstream assets then "
    "refresh through automation.",
)


def _close_orphaned_mlflow_runs(context, mlflow: MlflowTracking) -> None:
    closed = mlflow.end_orphaned_runs(context.dagster_run.run_id)
    if closed:
        context.log.info(f"run {context.dagster_run.run_id}: MLflow runs {closed} marked KILLED")


@dg.run_failure_sensor(
    name="mlflow_run_closer",
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks KILLED the MLflow runs a failed or killed Dagster run left RUNNING (a "
    "run worker killed by SIGKILL or the OOM killer cannot close them itself).",
)
def mlflow_run_closer(context: dg.RunFailureSensorContext, mlflow: MlflowTracking) -> None:
    _close_orphaned_mlflow_runs(context, mlflow)


@dg.run_status_sensor(
    name="mlflow_cancel_closer",
    run_status=dg.DagsterRunStatus.CANCELED,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks KILLED the MLflow runs a canceled Dagster run left RUNNING: a step "
    "stopped before it could close its run (its process ended first, or the store was busy).",
)
def mlflow_cancel_closer(context: dg.RunStatusSensorContext, mlflow: MlflowTracking) -> None:
    _close_orphaned_mlflow_runs(context, mlflow)
