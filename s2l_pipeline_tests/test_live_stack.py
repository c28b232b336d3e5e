"""The production-shaped deployment on one machine, as an operator runs it.

`infra/stack up` starts PostgreSQL (instance storage, MLflow's store), a moto S3 server (artifacts,
shards, MLflow's artifacts, compute logs), MLflow, a Ray head with two logical GPUs, the daemon
and the webserver. The tiny job is launched through GraphQL and runs on the Ray executor, every
step a Ray job; the proxy's worker is SIGKILLed mid-training: Ray reports the job failed,
Dagster's health check retries the step, and the run still succeeds with the same bytes as an
in-process run of the same config. A shard dropped into the S3 shard prefix is picked up by the
daemon's sensor, and automation re-selects; then `infra/stack down` stops everything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import boto3
import psutil
import pytest
import requests

from s2l_pipeline.deploy.job_runs import summarize
from s2l_pipeline.deploy.local_stack import pg_data_dir

from .conftest import PROJECT_ROOT
from .helpers import new_rows, write_shard
from .live import (
    FEWER_UNITS,
    NO_BASELINE,
    THREADS,
    UNIT,
    VICTIM,
    DagsterGraphQL,
    SharedInProcessRun,
    is_gpu_step,
    key_job,
    session_base,
    settled_ray_jobs,
    step_process,
    step_started,
    wait_for,
)

pytestmark = pytest.mark.live

STACK = PROJECT_ROOT / "infra" / "stack"


def stack(*args: str, timeout: float = 400) -> str:
    out = subprocess.run(
        [str(STACK), *args], capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT
    )
    assert out.returncode == 0, f"infra/stack {args} failed:\n{out.stdout}\n{out.stderr[-4000:]}"
    return out.stdout


def stack_processes(state: dict) -> list[dict]:
    """What is left of a stack: processes of its services' groups and its PostgreSQL's."""
    groups = {s["pgid"] for s in state["services"] if "pgid" in s}
    pg_data = [s["data"] for s in state["services"] if s["kind"] == "postgres"]
    left = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        if _group(p) in groups or any(d in cmd for d in pg_data):
            left.append(p.info)
    return left


@pytest.fixture
def in_process_run(tmp_path_factory):
    """The same job in one process, shared with the Ray module's multiprocess test (live.py):
    started before the stack when this test asks first (the two share the cores while the
    stack comes up); the test waits for it when it compares."""
    if os.environ.get(NO_BASELINE):  # a pytest stopped before it compares (test_live_stopping)
        yield _no_baseline
        return
    run = SharedInProcessRun(session_base(tmp_path_factory))
    try:
        yield run.finished
    finally:
        run.stop()


def _no_baseline():
    raise AssertionError(f"{NO_BASELINE} is set: this pytest has no in-process run to compare")


@pytest.fixture
def deployment(tmp_path, in_process_run):
    """`infra/stack up --foreground`, as an operator runs it in a terminal; stopped with Ctrl-C
    (SIGINT) unless the test stopped it with `down`, and then nothing of it may be left."""
    root = tmp_path / "stack"
    log = tmp_path / "stack_up.log"
    started = time.monotonic()
    up = subprocess.Popen(
        [str(STACK), "up", "--foreground", "--dir", str(root), "--profile", "tiny",
         "--gpus", "2", "--cpus", "2"],
        cwd=PROJECT_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
        env={**os.environ, **THREADS},  # every step's thread count, as the in-process run's
    )  # fmt: skip
    state = None
    try:

        def ready():
            if up.poll() is not None:
                raise RuntimeError(f"infra/stack up exited {up.returncode}:\n{log.read_text()}")
            return "stack up in" in log.read_text()

        wait_for("infra/stack up", ready, timeout=400, every=0.5)
        state = json.loads((root / "stack.json").read_text())
        state["up_s"] = time.monotonic() - started
        yield root, state, up
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=120)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
        finally:
            shutil.rmtree(pg_data_dir(root), ignore_errors=True)  # as root it lives outside tmp
        assert up.returncode == 0, log.read_text()[-4000:]
        assert "stack stopped" in log.read_text()
        assert not (root / "stack.json").exists()
        if state is not None:
            assert not stack_processes(state), stack_processes(state)


def _s3(env: dict[str, str]):
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def _env_sh(root: Path) -> dict[str, str]:
    env = {}
    for line in (root / "env.sh").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = json.loads(value)
    return env


def _kill_the_proxy_mid_training(env: dict[str, str]) -> str:
    """SIGKILL the proxy step's process once its first Trainer checkpoint is on disk (a sleep
    after the step's start raced the step's end on a quiet machine); its step key."""
    victim = wait_for(f"{VICTIM}'s Ray job", lambda: step_process(VICTIM), 600, every=0.2)
    key = victim.environ()["DAGSTER_RUN_STEP_KEY"]
    work = Path(env["S2L_DATA_DIR"]) / "work" / "proxy"
    wait_for(
        f"{key}'s first Trainer checkpoint",
        lambda: any(work.glob("*/checkpoint-*/rng_state.pth")) or not victim.is_running(),
        300,
        every=0.05,
    )
    assert victim.is_running(), f"{key} ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    return key


def _check_ray_run(run, key: str, baseline, ray_url: str) -> None:
    """The killed step was retried, and the run gives the in-process run's bytes; every GPU
    step ran as its own Ray job given one of the two GPUs; CPU steps asked for none."""
    assert run.status == "SUCCESS"
    assert key in run.retried, f"{key} was not retried: {run.retried}"
    # Same inputs, same seed: the same trajectories, subset and evaluation, byte for byte.
    differ = {a: (v, baseline.data_versions.get(a)) for a, v in run.data_versions.items()
              if v != baseline.data_versions.get(a)}  # fmt: skip
    for asset in ("loss_trajectories", "selected_subset", "target_model", "target_evaluation"):
        assert run.data_versions[asset] == baseline.data_versions[asset], (asset, differ)
    assert run.headline == baseline.headline and run.headline
    gpu_steps = [k for k in run.step_s if is_gpu_step(k)]
    units = [k for k in gpu_steps if k.startswith(UNIT)]
    assert len(units) == 3  # 3 checkpoints x 1 row shard (FEWER_UNITS)
    for step in gpu_steps:
        worker = run.workers[step][-1]
        assert worker["executor"] == "ray", step
        assert worker["CUDA_VISIBLE_DEVICES"] in ("0", "1"), (step, worker)
        assert worker["ray_job"].startswith("dagster-step-"), (step, worker)
    jobs = {run.workers[u][-1]["ray_job"] for u in units}
    assert len(jobs) == len(units), "scoring units shared a Ray job"
    assert run.workers[key][-1]["ray_job"].endswith("-1")  # the retry's own Ray job
    assert {run.workers[u][-1]["CUDA_VISIBLE_DEVICES"] for u in units} == {"0", "1"}
    by_id = settled_ray_jobs(ray_url)
    assert by_id[key_job(run, key)]["status"] == "FAILED"  # the killed attempt
    assert by_id[run.workers[key][-1]["ray_job"]]["status"] == "SUCCEEDED"
    unsuccessful = {
        i: (j["status"], j.get("message"))
        for i, j in by_id.items()
        if j["status"] != "SUCCEEDED" and i != key_job(run, key)
    }
    assert not unsuccessful, unsuccessful
    cpu_job = next(j for j in by_id.values() if j["metadata"].get("dagster/op") == "training_pool")
    assert not cpu_job.get("entrypoint_num_gpus")


def test_stack_runs_on_ray_and_reselects_a_new_s3_shard(
    deployment, in_process_run, tmp_path, monkeypatch
) -> None:
    root, state, up = deployment
    env = _env_sh(root)
    dagster = DagsterGraphQL(state["urls"]["dagster"])
    wait_for("the code location", dagster.location_loaded, 120, every=2)
    timings = {"up_s": round(state["up_s"], 1)}

    started = time.monotonic()
    run_id = dagster.launch("s2l_job", {"dagster/partition": "selected"}, FEWER_UNITS)
    key = _kill_the_proxy_mid_training(env)
    dagster.wait_run(run_id, timeout=900)
    timings["main_job_s"] = round(time.monotonic() - started, 1)
    for name, value in env.items():  # the instance's dagster.yaml reads the stack's settings
        monkeypatch.setenv(name, value)
    assert step_started(Path(env["DAGSTER_HOME"]), key, run_id)  # a retry, not a skip
    _check_ray_run(
        summarize(Path(env["DAGSTER_HOME"]), run_id), key, in_process_run(), state["urls"]["ray"]
    )
    proxy = dagster.latest_materialization("proxy_checkpoints")
    worker = json.loads(proxy["metadata"]["worker"])
    assert worker["executor"] == "ray" and worker["CUDA_VISIBLE_DEVICES"] in ("0", "1")

    # Everything landed in the S3 server: artifacts, MLflow's artifacts, compute logs.
    s3 = _s3(env)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="s2l")
        for o in page.get("Contents", [])
    ]
    assert any(k.startswith("artifacts/selected_subset/") for k in keys)
    assert any(k.startswith("mlflow/") for k in keys), "no MLflow artifact in S3"
    assert any(k.startswith("dagster/compute-logs/") for k in keys), "no compute log in S3"
    # MLflow's runs are in its PostgreSQL-backed server, tagged with the Dagster run.
    mlflow_url = env["MLFLOW_TRACKING_URI"]
    exps = requests.get(
        f"{mlflow_url}/api/2.0/mlflow/experiments/search", params={"max_results": 100}, timeout=10
    ).json()["experiments"]
    runs = requests.post(
        f"{mlflow_url}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [e["experiment_id"] for e in exps], "max_results": 200},
        timeout=10,
    ).json()["runs"]
    tagged = {
        t["value"] for r in runs for t in r["data"].get("tags", []) if t["key"] == "dagster.run_id"
    }
    assert run_id in tagged, f"no MLflow run tagged with {run_id}"

    # A new shard in the S3 shard prefix: the daemon's sensor and automation re-select.
    # The shard lands first: the sensor's first tick (right after it starts) finds it, where
    # one started first ticks on an empty prefix and looks again only 60 s later.
    first = dagster.latest_materialization("selected_subset")
    started = time.monotonic()
    local = write_shard(tmp_path / "fresh.jsonl", new_rows(40, 7))
    s3.upload_file(str(local), "s2l", "shards/fresh.jsonl")
    for sensor in ("shard_sensor", "default_automation_condition_sensor"):
        assert dagster.start_sensor(sensor) == "RUNNING"

    def reselected():
        m = dagster.latest_materialization("selected_subset")
        return m if m and m["timestamp"] > first["timestamp"] else None

    subset = wait_for("the daemon to re-select", reselected, timeout=900, every=5)
    timings["reselect_s"] = round(time.monotonic() - started, 1)
    lineage = json.loads(subset["metadata"]["lineage"])
    assert "fresh.jsonl" in lineage["dataset"]["shards"]
    print(f"stack timings: {timings}")

    # `down`, from another shell, stops every process the stack started (Ray, servers, daemon,
    # PostgreSQL), and the foreground `up` ends with it.
    stack("down", "--dir", str(root))
    assert not (root / "stack.json").exists()
    assert up.wait(timeout=60) == 0
    assert not stack_processes(state), stack_processes(state)


def _group(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except ProcessLookupError:
        return None
