"""Cancel as deployed: terminate from GraphQL while the proxy trains under `dagster dev`.

The step stops within seconds, is not retried, leaves no process behind, its MLflow run is
marked KILLED, and the next run gets the gpu pool slot. A forced cancel (the UI's "terminate
immediately", which only marks the run) stops the worker too: training polls the run status.
"""

import sqlite3
import time

import psutil
import pytest

from .live import DagsterDev, wait_for

pytestmark = pytest.mark.live

LONG_PROXY = {"ops": {"proxy_checkpoints": {"config": {"epochs": 400.0}}}}
RETRY_EVENTS = {"ExecutionStepUpForRetryEvent", "ExecutionStepRestartEvent"}


@pytest.fixture
def dev(tmp_path):
    server = DagsterDev(tmp_path).start()
    yield server
    server.stop()


def mlflow_statuses(dev: DagsterDev, run_id: str) -> list[tuple[str]]:
    """Status of each MLflow run tagged with this Dagster run (the local SQLite store)."""
    with sqlite3.connect(dev.root / "data" / "mlflow" / "mlflow.db") as db:
        return db.execute(
            "select r.status from runs r join tags t on t.run_uuid = r.run_uuid "
            "where t.key = 'dagster.run_id' and t.value = ?",
            (run_id,),
        ).fetchall()


def descendants(dev: DagsterDev) -> set[int]:
    return {p.pid for p in psutil.Process(dev.proc.pid).children(recursive=True)}


def training_started(dev: DagsterDev) -> bool:
    return any((dev.root / "data" / "work" / "proxy").glob("*/exports.json"))


def cancel_mid_training(dev: DagsterDev, force: bool) -> tuple[str, float, set[int]]:
    """Launch a long proxy training, cancel it once training runs; (run id, seconds, pids)."""
    for f in (dev.root / "data" / "work" / "proxy").glob("*/exports.json"):
        f.unlink()
    before = descendants(dev)
    run_id = dev.launch("s2l_job", {"dagster/partition": "selected"}, LONG_PROXY)
    wait_for("the proxy to start training", lambda: training_started(dev), 300, every=0.5)
    time.sleep(2)
    # Run workers (and their helpers); not the code server's multiprocessing resource tracker,
    # which lives as long as the code server.
    workers = {p for p in descendants(dev) - before if "resource_tracker" not in " ".join(_cmd(p))}
    assert workers, "no run worker process found"
    t0 = time.monotonic()
    result = dev.terminate(run_id, force=force)
    assert result["__typename"] == "TerminateRunSuccess", result
    dev.wait_run(run_id, timeout=60, done=("CANCELED",))
    gone = wait_for(
        f"the run worker to exit: {_cmdlines(workers)}",
        lambda: not any(psutil.pid_exists(p) and _alive(p) for p in workers),
        timeout=60,
        every=0.5,
    )
    assert gone
    return run_id, time.monotonic() - t0, workers


def _cmdlines(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            cmd = " ".join(proc.cmdline())[:200]
            out.append(f"{pid} ({proc.status()}, cpu {proc.cpu_percent(0.2):.0f}%): {cmd}")
        except psutil.NoSuchProcess:
            out.append(f"{pid}: (gone)")
    return out


def _cmd(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_cancel_stops_training_without_retry(dev: DagsterDev) -> None:
    run_id, seconds, _ = cancel_mid_training(dev, force=False)
    assert seconds < 30, f"cancel took {seconds:.0f} s"
    events = dev.events(run_id)
    kinds = {e["__typename"] for e in events}
    assert not kinds & RETRY_EVENTS, "an interrupted step was retried"
    proxy_starts = [
        e
        for e in events
        if e["__typename"] == "ExecutionStepStartEvent" and e["stepKey"] == "proxy_checkpoints"
    ]
    assert len(proxy_starts) == 1
    # The step closes its MLflow run as it stops; when its process ends first (a loaded
    # machine), the daemon's mlflow_cancel_closer sensor does.
    wait_for(
        "the canceled run's MLflow run to be marked KILLED",
        lambda: mlflow_statuses(dev, run_id) == [("KILLED",)],
        timeout=120,
        every=2,
    )


def test_forced_cancel_stops_the_worker_and_frees_the_pool(dev: DagsterDev) -> None:
    run_id, seconds, _ = cancel_mid_training(dev, force=True)
    assert seconds < 30, f"the worker ran on for {seconds:.0f} s after a forced cancel"
    # The gpu pool slot is free again: a normal run (tiny scale) goes through.
    nxt = dev.launch("s2l_job", {"dagster/partition": "selected"})
    dev.wait_run(nxt, timeout=600)


def test_sigkilled_run_worker_frees_its_pool_slot(dev: DagsterDev) -> None:
    """The OOM killer takes the run worker: the run is marked failed and the next run gets
    the gpu slot without anyone deleting runs."""
    before = descendants(dev)
    run_id = dev.launch("s2l_job", {"dagster/partition": "selected"}, LONG_PROXY)
    wait_for("the proxy to start training", lambda: training_started(dev), 300, every=0.5)
    workers = [p for p in descendants(dev) - before if "spawn_main" in " ".join(_cmd(p))]
    assert workers, "no run worker process found"
    for pid in workers:
        psutil.Process(pid).kill()
    dev.wait_run(run_id, timeout=120, done=("FAILURE",))
    # The worker could not close its MLflow run; the daemon's mlflow_run_closer sensor does.
    wait_for(
        "the killed run's MLflow run to be marked KILLED",
        lambda: mlflow_statuses(dev, run_id) == [("KILLED",)],
        timeout=120,
        every=2,
    )
    nxt = dev.launch("s2l_job", {"dagster/partition": "selected"})
    dev.wait_run(nxt, timeout=600)
