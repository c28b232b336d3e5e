"""The code location: every asset, check, resource and job of s2l_pipeline."""

from __future__ import annotations

import os

import dagster as dg

from .defs.automation import RetrainPolicy
from .defs.data_assets import eval_sets, raw_dataset
from .defs.data_checks import eval_sets_not_in_training, raw_dataset_rows_valid
from .defs.profiles import active_profile
from .defs.proxy_assets import proxy_checkpoints
from .defs.resources import ArtifactStoreResource, ManifestIOManager, default_artifact_root
from .defs.selection_assets import selected_subset, trajectory_clusters
from .defs.sensors import (
    proxy_retrain_schedule,
    proxy_retrain_sensor,
    reselection_schedule,
    shard_sensor,
)
from .defs.shard_assets import (
    ShardSourceResource,
    data_shard,
    shard_inventory,
    shard_trajectories,
    training_pool,
)
from .defs.target_assets import target_evaluation, target_model
from .defs.tracking import MlflowTracking
from .defs.trajectory_assets import loss_trajectories
from .defs.trajectory_checks import (
    trajectories_cover_dataset,
    trajectories_finite,
    trajectories_loss_decreases,
)

ASSETS = [
    raw_dataset,
    eval_sets,
    proxy_checkpoints,
    loss_trajectories,
    shard_inventory,
    data_shard,
    shard_trajectories,
    training_pool,
    trajectory_clusters,
    selected_subset,
    target_model,
    target_evaluation,
]
# Everything but the per-shard assets (their dynamic partitions need runs of their own).
MAIN_ASSETS = [a for a in ASSETS if a not in (shard_inventory, data_shard, shard_trajectories)]
CHECKS = [
    raw_dataset_rows_valid,
    eval_sets_not_in_training,
    trajectories_cover_dataset,
    trajectories_finite,
    trajectories_loss_decreases,
]


def artifact_store_resource() -> ArtifactStoreResource:
    """Local folder by default; S2L_ARTIFACT_ROOT=s3://... and AWS_ENDPOINT_URL for S3."""
    endpoint = dg.EnvVar("AWS_ENDPOINT_URL") if os.environ.get("AWS_ENDPOINT_URL") else None
    return ArtifactStoreResource(root=default_artifact_root(), endpoint_url=endpoint)


def mlflow_resource() -> MlflowTracking:
    """Local SQLite store by default; MLFLOW_TRACKING_URI points at a server."""
    uri = dg.EnvVar("MLFLOW_TRACKING_URI") if os.environ.get("MLFLOW_TRACKING_URI") else None
    return MlflowTracking(tracking_uri=uri)


def resources() -> dict:
    """Every output, asset or op, goes through the JSON manifest IO manager: no pickles."""
    store = artifact_store_resource()
    endpoint = dg.EnvVar("AWS_ENDPOINT_URL") if os.environ.get("AWS_ENDPOINT_URL") else None
    return {
        "artifact_store": store,
        "io_manager": ManifestIOManager(artifact_store=store),
        "mlflow": mlflow_resource(),
        "shard_source": ShardSourceResource(endpoint_url=endpoint),
        "retrain_policy": RetrainPolicy(),
    }


# Locally every step runs in one process: on 2 cores, starting a process and importing torch
# for each of ~20 steps costs ~2.5 of the main job's minutes. A deployment with GPU workers
# swaps in a multiprocess, docker or k8s executor (each step, e.g. each scoring unit, on its
# own worker); the graph does not change.
LOCAL_EXECUTOR = dg.in_process_executor

# The shard assets have their own (dynamic) partitions: runs per shard come from shard_sensor.
MAIN_GRAPH = dg.AssetSelection.all() - dg.AssetSelection.assets(data_shard, shard_trajectories)

s2l_job = dg.define_asset_job(
    "s2l_job",
    selection=MAIN_GRAPH,
    executor_def=LOCAL_EXECUTOR,
    # The target assets are partitioned by training set; the main job trains on the selected
    # subset. Launch with the tag dagster/partition=random or =full for the comparisons.
    tags={"dagster/partition": "selected"},
    description=f"The whole S2L graph at this deployment's scale (S2L_PROFILE={active_profile()}).",
)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    resources=resources(),
    jobs=[s2l_job],
    sensors=[shard_sensor, proxy_retrain_sensor],
    schedules=[reselection_schedule, proxy_retrain_schedule],
)
