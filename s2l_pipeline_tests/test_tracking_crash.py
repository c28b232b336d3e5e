"""A process killed while MLflow builds its local SQLite store must not break later runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s2l_pipeline.core.support.tracking import mlflow_run

pytestmark = pytest.mark.slow

FIRST_RUN = """
import sys
from s2l_pipeline.core.support.tracking import mlflow_run
with mlflow_run(sys.argv[1], "exp", "first"):
    pass
"""


@pytest.mark.parametrize("delay", [1.0, 1.4, 1.8, 2.2, 2.6])
def test_killed_while_creating_the_store_then_runs_work(tmp_path: Path, delay: float) -> None:
    """SIGKILL the first run somewhere in importing MLflow or building its tables; the next
    run must work. Before the store was built atomically, a kill inside MLflow's migrations
    left 'table _alembic_tmp_params already exists' for every later run. No store template
    in the cache: the kill lands while MLflow builds it, as on a machine's first run."""
    import shutil

    shutil.rmtree(Path(os.environ["S2L_CACHE_DIR"]) / "mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-c", FIRST_RUN, uri])
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with mlflow_run(uri, "exp", "after-the-crash", {"k": "v"}) as run:
        run.log_metrics({"m": 1.0})
    assert run.client.get_run(run.run_id).info.status == "FINISHED"


@pytest.mark.parametrize("status", ["CANCELED", "FAILURE"])
def test_closer_sensors_mark_a_dead_runs_mlflow_runs_killed(
    tmp_path: Path, monkeypatch, status: str
) -> None:
    """A canceled or failed Dagster run whose step died with its MLflow run open: the matching
    sensor marks that run KILLED and leaves other Dagster runs' MLflow runs alone (unit test;
    the live cancel and SIGKILL tests drive the same sensors through the daemon)."""
    import dagster as dg
    from mlflow.tracking import MlflowClient

    from s2l_pipeline.defs.resources import MlflowTracking
    from s2l_pipeline.defs.sensors import mlflow_cancel_closer, mlflow_run_closer

    monkeypatch.setenv("S2L_DATA_DIR", str(tmp_path))
    mlflow = MlflowTracking()
    uri = mlflow.resolved_uri()

    @dg.op
    def step() -> None:
        if status == "FAILURE":
            raise RuntimeError("the step dies")

    @dg.job
    def job() -> None:
        step()

    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    run = result.dagster_run
    other = "another-dagster-run"
    for dagster_run_id in (run.run_id, other):
        tags = {"dagster.run_id": dagster_run_id}
        with pytest.raises(KeyboardInterrupt), mlflow_run(uri, mlflow.experiment, "proxy", tags):
            raise KeyboardInterrupt
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(mlflow.experiment)
    # Reopen both as a SIGKILLed step would have left them.
    for r in client.search_runs([exp.experiment_id]):
        client.update_run(r.info.run_id, status="RUNNING")
    if status == "CANCELED":
        instance.report_run_canceled(run)
        event = instance.get_records_for_run(run.run_id).records[-1].event_log_entry
        sensor = mlflow_cancel_closer
    else:
        event = [e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE"][-1]
        sensor = mlflow_run_closer
    dagster_event = event.dagster_event if hasattr(event, "dagster_event") else event
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run.run_id),
        resources={"mlflow": mlflow},
    )
    sensor(context)
    statuses = {
        r.data.tags["dagster.run_id"]: r.info.status
        for r in client.search_runs([exp.experiment_id])
    }
    assert statuses == {run.run_id: "KILLED", other: "RUNNING"}


def test_new_stores_copy_one_template_kept_in_the_cache(tmp_path: Path, monkeypatch) -> None:
    """MLflow migrates an empty store once per machine and version (the cache folder keeps
    it); each new store is a copy whose default experiment lives beside that store, and a
    template that is not a database is built again."""
    from s2l_pipeline.core.support import tracking

    monkeypatch.setattr(tracking, "_EMPTY_STORE", {})  # as a new process starts
    stores = [tmp_path / name / "mlflow.db" for name in ("a", "b", "c")]
    tracking.ensure_sqlite_store(f"sqlite:///{stores[0]}")
    [template] = (Path(os.environ["S2L_CACHE_DIR"]) / "mlflow").glob("empty-store-*.db")
    made = template.stat().st_mtime_ns
    monkeypatch.setattr(tracking, "_EMPTY_STORE", {})
    tracking.ensure_sqlite_store(f"sqlite:///{stores[1]}")
    assert template.stat().st_mtime_ns == made  # read, not built again
    template.write_bytes(b"half a file")
    monkeypatch.setattr(tracking, "_EMPTY_STORE", {})
    tracking.ensure_sqlite_store(f"sqlite:///{stores[2]}")
    assert template.read_bytes().startswith(b"SQLite format 3")
    for store in stores:
        uri = f"sqlite:///{store}"
        with mlflow_run(uri, "exp", "one", {"k": "v"}) as run:
            run.log_metrics({"m": 1.0})
        default = run.client.get_experiment("0").artifact_location
        assert default.startswith(tracking.local_artifact_location(uri)), default
        assert run.client.get_run(run.run_id).data.metrics == {"m": 1.0}
