"""Every job of the code location: the whole graph, re-selection, proxy retraining."""

import dagster as dg

from .data import eval_sets, raw_dataset
from .executors import deployment_executor, lost_worker_retry_policy
from .profiles import active_profile
from .proxy import proxy_checkpoints
from .selection import selected_subset, training_pool, trajectory_clusters
from .study import study_cells, study_report, study_split
from .target import target_evaluation, target_model
from .trajectories import loss_trajectories

# One engine per deployment (S2L_EXECUTOR: in_process, multiprocess, ray, k8s); the graph is
# the same on all of them. Automation's runs get it through Definitions(executor=...).
EXECUTOR = deployment_executor()

# The main graph, data to evaluation: the one list s2l_job, `s2l run` and the tests take. The
# shard assets are not in it: they have their own (dynamic) partitions, run by shard_sensor.
MAIN_ASSETS = [
    raw_dataset,
    eval_sets,
    proxy_checkpoints,
    loss_trajectories,
    training_pool,
    trajectory_clusters,
    selected_subset,
    target_model,
    target_evaluation,
]
MAIN_GRAPH = dg.AssetSelection.assets(*MAIN_ASSETS)

s2l_job = dg.define_asset_job(
    "s2l_job",
    selection=MAIN_GRAPH,
    executor_def=EXECUTOR,
    op_retry_policy=lost_worker_retry_policy(),
    # The target assets are partitioned by training set; the main job trains on the selected
    # subset. Launch with the tag dagster/partition=random or =full for the comparisons.
    tags={"dagster/partition": "selected"},
    description=f"The whole S2L graph at this deployment's scale (S2L_PROFILE={active_profile()}).",
)

reselect_job = dg.define_asset_job(
    "reselect_job",
    selection=dg.AssetSelection.assets(training_pool, trajectory_clusters, selected_subset),
    executor_def=EXECUTOR,
    op_retry_policy=lost_worker_retry_policy(),
    description="Pool, clusters and subset again, from the trajectories already scored.",
)

proxy_retrain_job = dg.define_asset_job(
    "proxy_retrain_job",
    selection=dg.AssetSelection.assets(proxy_checkpoints),
    executor_def=EXECUTOR,
    op_retry_policy=lost_worker_retry_policy(),
    description="Retrain the proxy on the pool as it is now (the retrain policy's schedule).",
)

# The study (defs/study.py): what its cells need, the cells one partition per run, the report.
STUDY_PREP_ASSETS = [
    raw_dataset,
    proxy_checkpoints,
    loss_trajectories,
    training_pool,
    trajectory_clusters,
    study_split,
]
STUDY_ASSETS = [study_split, study_cells, study_report]

study_prep_job = dg.define_asset_job(
    "study_prep_job",
    selection=dg.AssetSelection.assets(*STUDY_PREP_ASSETS),
    executor_def=EXECUTOR,
    op_retry_policy=lost_worker_retry_policy(),
    description="What a selection study's cells need: the proxy, its trajectories, the pool "
    "and the validation split.",
)

study_cells_job = dg.define_asset_job(
    "study_cells_job",
    selection=dg.AssetSelection.assets(study_cells),
    executor_def=EXECUTOR,
    op_retry_policy=lost_worker_retry_policy(),
    description="One cell of the study (launch with the tag dagster/partition=<method>-<budget>-"
    "<seed>, or backfill study_cells' partitions from the UI).",
)

study_report_job = dg.define_asset_job(
    "study_report_job",
    selection=dg.AssetSelection.assets(study_report),
    executor_def=EXECUTOR,
    description="The study's report over every finished cell.",
)


WHOLE_GRAPH_HINT = (
    "s2l_pipeline: `dagster asset materialize --select '*'` cannot run here: Dagster needs one "
    "partitioning for all the assets of that command, and this graph has three (none; per "
    "training set: target_model, target_evaluation; per shard: data_shard, shard_trajectories). "
    "Run the whole graph with `s2l run` (DAGSTER_HOME set), or `dagster job execute -m "
    's2l_pipeline.definitions -j s2l_job --tags \'{"dagster/partition": "selected"}\'`, or '
    "launch s2l_job from the UI; shards are materialized by shard_sensor."
)


def whole_graph_hint(argv: list[str]) -> str | None:
    """What to run instead, when the command line asks `dagster asset materialize` for every
    asset (Dagster's own error names no way out)."""
    if "asset" not in argv or "materialize" not in argv:
        return None
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--select=") else None
        if arg == "--select" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None and value.strip() in ("*", "'*'"):
            return WHOLE_GRAPH_HINT
    return None
