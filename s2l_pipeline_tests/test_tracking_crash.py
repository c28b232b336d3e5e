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
    left 'table _alembic_tmp_params already exists' for every later run."""
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-c", FIRST_RUN, uri])
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with mlflow_run(uri, "exp", "after-the-crash", {"k": "v"}) as run:
        run.log_metrics({"m": 1.0})
    assert run.client.get_run(run.run_id).info.status == "FINISHED"
