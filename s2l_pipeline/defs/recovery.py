"""After a crash: find runs whose process is gone and release what they hold.

A run killed by SIGKILL (or the OOM killer) stays STARTED in the instance, keeps its ``gpu``
pool slot, and its MLflow run stays RUNNING; every later run then waits for that slot. Under
the daemon, Dagster's code server reports the dead run worker as failed and run monitoring
(``dagster.yaml``) frees its slots. ``s2l run`` executes in its own process with no daemon, so
it tags its runs with its host, pid and process start time, and sweeps dead ones at start.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import dagster as dg

HOST_TAG, PID_TAG, START_TAG = "s2l/host", "s2l/pid", "s2l/pid_start"
UNFINISHED = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (tells a live process from a reused pid); '' if none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_tags() -> dict[str, str]:
    """Tags that let a later process tell whether this one is still alive."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), START_TAG: process_start(pid)}


def owner_alive(tags: dict[str, str]) -> bool:
    """True unless the run's owner process is known to be gone (same host, pid dead/reused)."""
    if PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return True  # another machine's run, or not ours: never judged dead from here
    start = process_start(int(tags[PID_TAG]))
    return bool(start) and start == tags.get(START_TAG)


def sweep_dead_runs(
    instance: dg.DagsterInstance,
    on_dead: Callable[[str], None] | None = None,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Fail unfinished runs whose owner process is gone; free every slot of finished runs."""
    dead = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        if owner_alive(run.tags):
            continue
        instance.report_engine_event(
            f"the process of this run (pid {run.tags[PID_TAG]}) is gone; marked failed by the "
            "next s2l run so its pool slots are freed",
            run,
        )
        instance.report_run_failed(run)
        dead.append(run.run_id)
        if on_dead:
            on_dead(run.run_id)
        say(f"run {run.run_id} died with its process (pid {run.tags[PID_TAG]}): marked failed")
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        for run_id in storage.get_concurrency_run_ids():
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                storage.free_concurrency_slots_for_run(run_id)
                say(f"freed the pool slots still held by finished run {run_id}")
    return dead
