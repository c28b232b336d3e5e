"""The code location: every asset, check, resource and job of s2l_pipeline."""

from __future__ import annotations

import os
import sys

import dagster as dg

from .defs.automation import RetrainPolicy
from .defs.data import data_shard, eval_sets_checks, shard_inventory
from .defs.jobs import (
    EXECUTOR,
    MAIN_ASSETS,
    STUDY_ASSETS,
    proxy_retrain_job,
    reselect_job,
    s2l_job,
    study_cells_job,
    study_prep_job,
    study_report_job,
    whole_graph_hint,
)
from .defs.preflight import raw_dataset_checks
from .defs.resources import (
    ArtifactStoreResource,
    ManifestIOManager,
    MlflowTracking,
    ShardSourceResource,
    default_artifact_root,
    default_work_dir,
)
from .defs.selection import clusters_group_similar_gradients
from .defs.sensors import (
    mlflow_cancel_closer,
    mlflow_run_closer,
    proxy_retrain_schedule,
    proxy_retrain_sensor,
    reselection_schedule,
    shard_sensor,
)
from .defs.target import predictions_not_constant
from .defs.trajectories import loss_trajectories_checks, shard_trajectories

# The main graph (defs/jobs.py) and the shards, which arrive one file at a time.
ASSETS = [*MAIN_ASSETS, shard_inventory, data_shard, shard_trajectories, *STUDY_ASSETS]
# Checks of one asset share a step (defs/check_groups.py).
CHECKS = [
    raw_dataset_checks,
    eval_sets_checks,
    loss_trajectories_checks,
    clusters_group_similar_gradients,
    predictions_not_constant,
]


def artifact_store_resource() -> ArtifactStoreResource:
    """Local folder by default; S2L_ARTIFACT_ROOT=s3://... and AWS_ENDPOINT_URL for S3."""
    endpoint = dg.EnvVar("AWS_ENDPOINT_URL") if os.environ.get("AWS_ENDPOINT_URL") else None
    return ArtifactStoreResource(
        root=default_artifact_root(), endpoint_url=endpoint, work_dir=default_work_dir()
    )


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


if hint := whole_graph_hint(sys.argv):  # say what to run before Dagster's own error
    print(hint, file=sys.stderr)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    resources=resources(),
    jobs=[
        s2l_job,
        reselect_job,
        proxy_retrain_job,
        study_prep_job,
        study_cells_job,
        study_report_job,
    ],
    sensors=[shard_sensor, proxy_retrain_sensor, mlflow_run_closer, mlflow_cancel_closer],
    schedules=[reselection_schedule, proxy_retrain_schedule],
    executor=EXECUTOR,
)
