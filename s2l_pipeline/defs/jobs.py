"""Every job of the code location: the whole graph, re-selection, proxy retraining."""

import dagster as dg

from .data import data_shard
from .profiles import active_profile
from .proxy import proxy_checkpoints
from .selection import selected_subset, training_pool, trajectory_clusters
from .trajectories import shard_trajectories

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

reselect_job = dg.define_asset_job(
    "reselect_job",
    selection=dg.AssetSelection.assets(training_pool, trajectory_clusters, selected_subset),
    description="Pool, clusters and subset again, from the trajectories already scored.",
)

proxy_retrain_job = dg.define_asset_job(
    "proxy_retrain_job",
    selection=dg.AssetSelection.assets(proxy_checkpoints),
    description="Retrain the proxy on the pool as it is now (the retrain policy's schedule).",
)
