"""MLflow through a real tracking server on loopback, and a server that does not answer."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from s2l_pipeline.defs.profiles import run_config
from s2l_pipeline.defs.resources import MlflowTracking
from s2l_pipeline.deploy.local_stack import MLFLOW_SERVER_ENV

from .conftest import _free_port
from .helpers import make_resources, meta

pytestmark = pytest.mark.slow


ASSETS_UNDER_TEST = ["raw_dataset", "proxy_checkpoints"]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with its own SQLite store, stopped after the module."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log = open(root / "server.log", "w")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **MLFLOW_SERVER_ENV},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        raise RuntimeError("mlflow server did not start: " + (root / "server.log").read_text())
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()


def _assets():
    from s2l_pipeline.definitions import ASSETS

    return [a for a in ASSETS if a.key.path[0] in ASSETS_UNDER_TEST]


def test_runs_reach_the_server_with_lineage_tags(tmp_path: Path, mlflow_server: str) -> None:
    from mlflow.tracking import MlflowClient

    resources = make_resources(str(tmp_path / "art"), mlflow_uri=mlflow_server)
    result = dg.materialize(
        _assets(), resources=resources, run_config=run_config("tiny", assets=ASSETS_UNDER_TEST)
    )
    proxy_meta = meta(result, "proxy_checkpoints")
    run_id = proxy_meta["mlflow_run_id"]
    assert proxy_meta["mlflow_run"].startswith(f"{mlflow_server}/#/experiments/")

    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["dagster.run_id"] == result.run_id
    assert tags["dagster.asset_key"] == "proxy_checkpoints"
    assert tags["upstream.raw_dataset.data_version"] == meta(result, "raw_dataset")["content_hash"]
    assert run.data.params["epochs"] == "2.0" and run.data.params["size"] == "proxy-tiny"
    assert len(client.get_metric_history(run_id, "loss")) >= 2
    names = {a.path for a in client.list_artifacts(run_id)}
    assert "proxy_manifest.json" in names


def test_unreachable_server_fails_clearly_or_falls_back(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("S2L_DATA_DIR", str(tmp_path / "data"))  # the fallback store goes here
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    resources = make_resources(str(tmp_path / "art"), mlflow_uri=dead)
    cfg = run_config("tiny", assets=ASSETS_UNDER_TEST)
    failed = dg.materialize(_assets(), resources=resources, run_config=cfg, raise_on_error=False)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.step_failure_data.user_failure_data.description
    assert f"MLflow tracking server {dead} is unreachable" in text and "on_unreachable" in text

    resources["mlflow"] = MlflowTracking(tracking_uri=dead, on_unreachable="local")
    ok = dg.materialize(_assets(), resources=resources, run_config=cfg)
    assert ok.success and meta(ok, "proxy_checkpoints")["mlflow_tracking_uri"].startswith(
        f"sqlite:///{tmp_path / 'data'}"
    )
