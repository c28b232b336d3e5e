"""Refresh as deployed: `dagster dev` (webserver + daemon) on loopback, driven through GraphQL.

A tiny-scale deployment (S2L_PROFILE=tiny) runs the main job launched without run config, then a
shard file lands in the shard folder; the daemon's sensor launches the shard run and declarative
automation re-materializes the pool, the clusters and the subset, with nobody clicking anything.
"""

import json

import pytest

from .live import DagsterDev, wait_for
from .test_shards import new_rows, write_shard

pytestmark = pytest.mark.live


@pytest.fixture
def dev(tmp_path):
    server = DagsterDev(tmp_path).start()
    yield server
    server.stop()


def test_new_shard_is_reselected_by_the_daemon(dev: DagsterDev) -> None:
    run_id = dev.launch("s2l_job", {"dagster/partition": "selected"})  # no run config
    dev.wait_run(run_id, timeout=600)
    raw = dev.latest_materialization("raw_dataset")
    assert raw["metadata"]["dagster/row_count"] == 400  # the deployment's tiny scale
    first_subset = dev.latest_materialization("selected_subset")

    for sensor in ("shard_sensor", "default_automation_condition_sensor"):
        assert dev.start_sensor(sensor) == "RUNNING"
    write_shard(dev.root / "shards" / "fresh.jsonl", new_rows(40, 7))

    def reselected():
        m = dev.latest_materialization("selected_subset")
        return m if m and m["timestamp"] > first_subset["timestamp"] else None

    subset = wait_for("automation to re-select the subset", reselected, timeout=600, every=5)
    lineage = json.loads(subset["metadata"]["lineage"])
    assert "fresh.jsonl" in lineage["dataset"]["shards"]

    runs = dev.runs()
    tags = [{t["key"]: t["value"] for t in r["tags"]} for r in runs]
    shard_runs = [t for t in tags if t.get("dagster/sensor_name") == "shard_sensor"]
    assert shard_runs and shard_runs[0]["dagster/partition"] == "fresh.jsonl"
    auto = [
        r for r, t in zip(runs, tags, strict=True) if t.get("dagster/from_automation_condition")
    ]
    assert auto, f"no automation run among {[(r['jobName'], r['status']) for r in runs]}"
    # Automation ran at the deployment's scale: the tiny profile's K=8, not the default 100.
    clusters = dev.latest_materialization("trajectory_clusters")
    assert clusters["runId"] != run_id
    assert clusters["metadata"]["n_clusters"] == 8
    pool = dev.latest_materialization("training_pool")
    assert pool["metadata"]["n_shards"] == 1
