"""Shared fixtures: paths to data samples, a real S3-compatible (moto) server on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from s2l_pipeline.core.support.tracking import empty_store_bytes, store_template

from . import stopping

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT_ROOT = Path(__file__).parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


_MARK = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Mark what this pytest process starts, and turn SIGTERM and SIGHUP into an interrupt that
    tears fixtures down (stopping.py)."""
    import threading

    config.stash[_MARK] = stopping.mark_this_process()
    if not hasattr(config, "workerinput"):
        _compile_the_package()
    if hasattr(config, "workerinput"):
        # Two workers on two cores: one torch thread each (set before torch is imported; the
        # processes a test starts inherit it), not two each fighting for the same cores.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        # A worker's results are with the controller once its session ends; what is left is
        # tearing down torch and its threads, 3-4 s of nothing the run waits for.
        import atexit

        atexit.register(_exit_without_teardown)
    if threading.current_thread() is threading.main_thread():
        controller = bool(getattr(config.option, "numprocesses", None)) and not hasattr(
            config, "workerinput"
        )
        stopping.interrupt_on_termination(forward_to_children=controller)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: the longest units of work first (scheduling.py)."""
    if hasattr(config, "workerinput"):
        from .scheduling import longest_units_first

        longest_units_first(items)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Modules as units of work, the tiny graph's users as one (scheduling.py)."""
    from .scheduling import UnitScheduling

    return UnitScheduling(config, log)


def _compile_the_package() -> None:
    """Write the package's bytecode once: under PYTHONDONTWRITEBYTECODE (set on these machines)
    an editable install has none, and each of the suite's few hundred Python processes (every
    `s2l`, `dagster` and Ray step) compiled the modules it imports again."""
    import compileall

    for folder in ("s2l_pipeline", "s2l_pipeline_tests"):
        compileall.compile_dir(str(PROJECT_ROOT / folder), quiet=1, workers=1)


def _exit_without_teardown() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def pytest_unconfigure(config: pytest.Config) -> None:
    """End whatever this pytest process started that is still running (after an interrupt: what
    a fixture was starting when the signal came); say so, since after a clean run it is a leak."""
    if _MARK not in config.stash:
        return
    left = stopping.sweep(config.stash[_MARK])
    if left:
        sys.stderr.write(
            f"\nstopped {len(left)} process(es) the tests had left running:\n  "
            + "\n  ".join(left)
            + "\n"
        )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test downloads S3 objects into its own cache, never the user's ~/.cache; the
    MLflow store template (what every new store copies) is the one this worker's first test
    built, as on a user's machine after the first run."""
    template = _mlflow_template(tmp_path_factory)
    cache = tmp_path_factory.mktemp("s2l_cache")
    monkeypatch.setenv("S2L_CACHE_DIR", str(cache))
    shutil.copytree(template.parent, store_template(cache).parent)


def _mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This worker's copy of the MLflow store template, built once (into a folder of its own,
    never the user's cache)."""
    root = tmp_path_factory.getbasetemp() / "mlflow_template"
    held = store_template(root)
    if not held.exists():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("S2L_CACHE_DIR", str(root))
            data = empty_store_bytes()
        if not held.exists():  # this process had made one already: keep its bytes
            held.parent.mkdir(parents=True, exist_ok=True)
            held.write_bytes(data)
    return held


def s2l_cmd() -> list[str]:
    """The installed ``s2l`` command, or the module when the script is not on the path."""
    import shutil as _shutil

    exe = _shutil.which("s2l") or str(Path(sys.executable).parent / "s2l")
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "s2l_pipeline.cli"]


def s2l_env(home: Path, profile: str | None = "tiny") -> dict[str, str]:
    """The environment of an ``s2l run`` a test starts: its own Dagster instance, artifact
    store and data folder under ``home``, at ``profile`` (None: the run's --profile decides)."""
    import os

    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "S2L_ARTIFACT_ROOT": str(home / "art"),
        "S2L_DATA_DIR": str(home / "data"),
    }
    if profile:
        env["S2L_PROFILE"] = profile
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, started for the session and stopped afterwards."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> str:
    """A fresh bucket on the moto server, with credentials set in the environment only."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = "s2l-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@dataclass(frozen=True)
class TinyGraph:
    """The main graph at the tiny profile, materialized into a persistent instance."""

    root: Path  # dagster/ (the instance), art/ (the artifact store), mlflow.db, work/
    instance: object  # dg.DagsterInstance
    resources: dict
    result: object  # the run's ExecuteInProcessResult
    pristine: Path  # a copy of ``root`` taken right after the run, before any test touched it


@pytest.fixture(scope="session")
def tiny_graph(tmp_path_factory: pytest.TempPathFactory) -> TinyGraph:
    """The tiny graph, materialized once per pytest run (the fast loop's one big cost). Tests
    that only read it share it; tests that change what is stored start from ``tiny_graph_copy``."""
    import dagster as dg

    from s2l_pipeline.definitions import CHECKS, MAIN_ASSETS
    from s2l_pipeline.defs.profiles import run_config

    from .helpers import make_resources

    root = tmp_path_factory.mktemp("tiny_graph")
    (root / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(root / "dagster"))
    resources = make_resources(str(root / "art"))
    result = dg.materialize(
        [*MAIN_ASSETS, *CHECKS],
        resources=resources,
        run_config=run_config("tiny"),
        partition_key="selected",
        instance=instance,
    )
    assert result.success
    pristine = tmp_path_factory.mktemp("tiny_graph_pristine")
    shutil.copytree(root, pristine, dirs_exist_ok=True)
    return TinyGraph(root, instance, resources, result, pristine)


@pytest.fixture(scope="module")
def tiny_graph_copy(tiny_graph: TinyGraph, tmp_path_factory: pytest.TempPathFactory):
    """(root, instance, resources) of a private copy of the tiny graph as it was just after its
    run: its own instance, artifact store and MLflow store, free to change."""
    import dagster as dg

    from .helpers import make_resources

    root = tmp_path_factory.mktemp("tiny_graph_copy")
    shutil.copytree(tiny_graph.pristine, root, dirs_exist_ok=True)
    return (
        root,
        dg.DagsterInstance.local_temp(str(root / "dagster")),
        make_resources(str(root / "art")),
    )
