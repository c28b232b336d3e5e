"""Stopped means stopped: SIGTERM to a pytest running the stack test, while the main job runs on
the stack, leaves none of the processes that pytest started (the stack's PostgreSQL, S3 server,
MLflow, Ray head and its step jobs, daemon, webserver), found by their ids before the signal."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest
import requests

from .conftest import PROJECT_ROOT
from .live import NO_BASELINE, wait_for

pytestmark = pytest.mark.live

TAG = "S2L_STOPPING_TEST"  # in the inner pytest's environment, so in all it starts


def tagged(tag: str) -> dict[int, tuple[float, str]]:
    """pid -> (create time, command line) of every live process whose environment has ``tag``."""
    found = {}
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = (proc.create_time(), " ".join(proc.cmdline())[:160])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def still_running(procs: dict[int, tuple[float, str]]) -> list[str]:
    left = []
    for pid, (created, cmd) in procs.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {cmd}")
        except psutil.NoSuchProcess:
            continue
    return left


def main_job_running(root: Path) -> bool:
    state_file = root / "stack.json"
    if not state_file.exists():
        return False
    urls = json.loads(state_file.read_text()).get("urls")
    if not urls:
        return False
    try:
        jobs = requests.get(f"{urls['ray']}/api/jobs/", timeout=5).json()
    except (requests.RequestException, ValueError):
        return False
    return any(j["status"] == "RUNNING" for j in jobs)


def test_sigterm_to_pytest_during_the_stack_test_leaves_no_process(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    basetemp = tmp_path / "inner"
    log = tmp_path / "inner_pytest.log"
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--basetemp",
         str(basetemp), str(Path(__file__).with_name("test_live_stack.py"))],
        cwd=PROJECT_ROOT, env={**os.environ, TAG: tag, NO_BASELINE: "1"}, stdout=log.open("w"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    procs: dict[int, tuple[float, str]] = {}
    try:

        def step_running():
            if inner.poll() is not None:
                raise RuntimeError(f"the inner pytest ended first:\n{log.read_text()[-3000:]}")
            return any(main_job_running(root) for root in basetemp.glob("*/stack"))

        wait_for("a step of the main job to run on the stack", step_running, 600, every=1)
        procs = tagged(tag)
        kinds = " ".join(cmd for _, cmd in procs.values())
        for service in ("postgres", "moto.server", "mlflow", "raylet", "dagster-daemon"):
            assert service in kinds, f"no {service} among {sorted(procs.items())}"
        inner.send_signal(signal.SIGTERM)
        assert inner.wait(timeout=240) != 0
        out = log.read_text()
        assert "stopped by SIGTERM" in out, out[-3000:]
        # Whatever pytest's teardown stopped is gone by the time it exits; allow a few seconds
        # for processes that were already ending.
        try:
            wait_for("the stack's processes to end", lambda: not still_running(procs), 15)
        except TimeoutError:
            raise AssertionError(f"left running: {still_running(procs)}") from None
        assert not tagged(tag), tagged(tag)
    finally:
        if inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)
        for pid in procs:  # never leave the machine dirty, even when the test failed
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
