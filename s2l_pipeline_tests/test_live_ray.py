"""The tiny graph on a real local Ray cluster (dagster-ray's executor), against in-process.

A Ray head on loopback with two logical GPUs; `dagster job execute` with S2L_EXECUTOR=ray makes
every step a Ray job. The proxy's worker is SIGKILLed mid-training: Ray reports the job failed,
Dagster's health check retries the step, and the run still succeeds with the same bytes.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from s2l_pipeline.deploy.job_runs import deployment_env, start_main_job, summarize
from s2l_pipeline.deploy.local_stack import start_local_ray, stop_group

from .live import settled_ray_jobs, wait_for

pytestmark = pytest.mark.live

UNIT = "loss_trajectories.score_trajectory_unit["
# The GPU steps by name: an asset check on a GPU asset (target_evaluation_predictions_not_constant)
# is a CPU step of its own.
GPU_ASSETS = {"proxy_checkpoints", "target_model", "target_evaluation"}


def is_gpu_step(key: str) -> bool:
    return key in GPU_ASSETS or key.startswith(UNIT)


VICTIM = "proxy_checkpoints"  # long enough at the tiny scale to be killed mid-training
SHELLS = {"sh", "bash", "dash"}


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """`ray start --head --num-cpus=2 --num-gpus=2` on 127.0.0.1, stopped after the module."""
    root = tmp_path_factory.mktemp("ray_head")
    head, address = start_local_ray(root, cpus=2, gpus=2)
    yield address
    stop_group(head)


def _step_process(step_prefix: str) -> psutil.Process | None:
    """The running `dagster api execute_step` process of a step whose key starts with the prefix."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            # The step's Python process, not the `/bin/sh -c` Ray wraps the entrypoint in.
            if "execute_step" not in " ".join(cmdline) or Path(cmdline[0]).name in SHELLS:
                continue
            if proc.environ().get("DAGSTER_RUN_STEP_KEY", "").startswith(step_prefix):
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _step_started(home: Path, step_key: str) -> bool:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    runs = instance.get_runs(limit=1)
    if not runs:
        return False
    records = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_START)
    return any(r.dagster_event.step_key == step_key for r in records)


# CPU results depend on the thread count: every run compared here uses the same (Ray would give
# a job that asked for one CPU a single thread; the executor forwards OMP_NUM_THREADS).
THREADS = {"OMP_NUM_THREADS": "2"}
# Each step on Ray or in its own process starts Python, torch and the code location (seconds):
# 3 checkpoints x 2 row shards keep 6 scoring units (both GPUs get some) instead of 15.
# The proxy trains 6 epochs, not 2, so the killed Ray worker is caught mid-training (between
# its first Trainer checkpoint and its last step) even on an idle machine.
FEWER_UNITS = {
    "ops": {
        "proxy_checkpoints": {"config": {"num_checkpoints": 2, "epochs": 6.0}},
        "loss_trajectories": {"ops": {"plan_scoring": {"config": {"shard_rows": 200}}}},
    }
}


@pytest.fixture(scope="module")
def in_process_run(tmp_path_factory):
    """The tiny main job in one process: what the other engines must reproduce, byte for byte."""
    root = tmp_path_factory.mktemp("in_process")
    local = deployment_env(root, "in_process", **THREADS)
    proc = start_main_job(local, root / "in_process.log", FEWER_UNITS)
    try:
        assert proc.wait(timeout=600) == 0, (root / "in_process.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return summarize(Path(local["DAGSTER_HOME"]))


def test_tiny_graph_on_ray_equals_in_process_and_survives_a_killed_worker(
    ray_address: str, in_process_run, tmp_path: Path
) -> None:
    baseline, threads = in_process_run, THREADS
    env = deployment_env(tmp_path / "ray", "ray", RAY_ADDRESS=ray_address, **threads)
    log = tmp_path / "ray.log"
    proc = start_main_job(env, log, FEWER_UNITS)
    try:
        victim = wait_for(f"{VICTIM}'s Ray job", lambda: _step_process(VICTIM), 600, every=0.2)
        key = victim.environ()["DAGSTER_RUN_STEP_KEY"]
        home = Path(env["DAGSTER_HOME"])
        # Inside the step, training: its first Trainer checkpoint is on disk (a sleep after the
        # step's start raced the step's end on a quiet machine).
        work = Path(env["S2L_DATA_DIR"]) / "work" / "proxy"
        wait_for(
            f"{key}'s first Trainer checkpoint",
            lambda: any(work.glob("*/checkpoint-*/rng_state.pth")) or not victim.is_running(),
            300,
            every=0.05,
        )
        assert victim.is_running(), f"{key} ended before it could be killed"
        victim.send_signal(signal.SIGKILL)
        assert _step_started(home, key)  # Dagster had seen the step start: a retry, not a skip
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run = summarize(home)

    assert run.status == "SUCCESS"
    assert key in run.retried, f"{key} was not retried: {run.retried}"
    # Same inputs, same seed: the same trajectories, subset and evaluation, byte for byte.
    for asset in ("loss_trajectories", "selected_subset", "target_model", "target_evaluation"):
        assert run.data_versions[asset] == baseline.data_versions[asset], asset
    assert run.headline == baseline.headline and run.headline

    # Every GPU step ran as its own Ray job and was given one of the two GPUs.
    gpu_steps = [k for k in run.step_s if is_gpu_step(k)]
    units = [k for k in gpu_steps if k.startswith(UNIT)]
    assert len(units) >= 6
    for step in gpu_steps:
        worker = run.workers[step][-1]
        assert worker["executor"] == "ray", step
        assert worker["CUDA_VISIBLE_DEVICES"] in ("0", "1"), (step, worker)
        assert worker["ray_job"].startswith("dagster-step-"), (step, worker)
    jobs = {run.workers[u][-1]["ray_job"] for u in units}
    assert len(jobs) == len(units), "scoring units shared a Ray job"
    assert run.workers[key][-1]["ray_job"].endswith("-1")  # the retry's own Ray job
    # Both GPUs were used, and CPU steps asked for none (no worker metadata, no GPU).
    assert {run.workers[u][-1]["CUDA_VISIBLE_DEVICES"] for u in units} == {"0", "1"}
    by_id = settled_ray_jobs(ray_address)
    listed = list(by_id.values())
    assert by_id[key_job(run, key)]["status"] == "FAILED"  # the killed attempt
    assert by_id[run.workers[key][-1]["ray_job"]]["status"] == "SUCCEEDED"
    cpu_job = next(j for j in listed if j["metadata"].get("dagster/op") == "training_pool")
    assert not cpu_job.get("entrypoint_num_gpus")

    overhead = sorted(run.launch_to_start_s.values())
    print(
        f"in-process {baseline.wall_s:.0f} s, ray {run.wall_s:.0f} s; median launch->start "
        f"{overhead[len(overhead) // 2]:.1f} s over {len(overhead)} steps"
    )


def key_job(run, key: str) -> str:
    """The killed attempt's Ray job: the retry's id without its attempt suffix."""
    return run.workers[key][-1]["ray_job"].rsplit("-", 1)[0]


def test_multiprocess_gives_each_gpu_step_its_own_gpu_and_the_same_bytes(
    in_process_run, tmp_path: Path
) -> None:
    """One machine with two GPUs: every step a process, GPU steps leasing GPU 0 or 1."""
    baseline, threads = in_process_run, THREADS

    multi = deployment_env(
        tmp_path / "multi", "multiprocess", S2L_GPUS="2", S2L_GPU_LEASE_DIR=str(tmp_path), **threads
    )
    proc = start_main_job(multi, tmp_path / "multi.log", FEWER_UNITS)
    assert proc.wait(timeout=900) == 0, (tmp_path / "multi.log").read_text()[-4000:]
    run = summarize(Path(multi["DAGSTER_HOME"]))

    assert run.status == "SUCCESS"
    for asset in ("loss_trajectories", "selected_subset", "target_model", "target_evaluation"):
        assert run.data_versions[asset] == baseline.data_versions[asset], asset
    gpu_steps = [k for k in run.step_s if is_gpu_step(k)]
    devices = {run.workers[k][-1]["CUDA_VISIBLE_DEVICES"] for k in gpu_steps}
    assert devices == {"0", "1"}, devices  # both GPUs used, each step holding one
    pids = {run.workers[k][-1]["pid"] for k in gpu_steps}
    assert len(pids) == len(gpu_steps)  # every step its own process


def _study(env: dict[str, str], args: list[str], log: Path) -> dict:
    """`s2l study` in a deployment's environment, as a user runs it; its summary line."""
    import json
    import subprocess

    from .conftest import s2l_cmd

    done = subprocess.run(
        [*s2l_cmd(), "study", *args], env=env, cwd=env["DAGSTER_HOME"], capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    log.write_text(done.stderr)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cell_runs(home: Path) -> list[tuple[float, float, dict]]:
    """(start, end, worker metadata) of each study cell's run in the instance at ``home``."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    records = instance.get_run_records(filters=dg.RunsFilter(job_name="study_cells_job"))
    out = []
    for rec in records:
        assert rec.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        [mat] = [
            e.dagster_event.event_specific_data.materialization
            for e in instance.all_logs(rec.dagster_run.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        ]
        out.append((rec.start_time, rec.end_time, mat.metadata["worker"].value))
    return out


def test_study_cells_run_two_at_a_time_each_on_its_own_gpu(tmp_path: Path) -> None:
    """`s2l study --parallel 2` on a multiprocess deployment with two GPUs: cells overlap in
    time, each holding GPU 0 or 1 through the lease."""
    env = deployment_env(
        tmp_path / "multi", "multiprocess", S2L_GPUS="2", S2L_GPU_LEASE_DIR=str(tmp_path),
        OMP_NUM_THREADS="1",
    )  # fmt: skip
    out = _study(
        env,
        ["--methods", "random", "--budgets", "0.2", "--seeds", "1", "--parallel", "2"],
        tmp_path / "study.log",
    )
    assert out["cells"] == 2 and not out["failed_cells"]  # random-0.2-0 and full-1-0
    runs = _cell_runs(Path(env["DAGSTER_HOME"]))
    assert len(runs) == 2
    assert {w["CUDA_VISIBLE_DEVICES"] for _, _, w in runs} == {"0", "1"}
    assert {w["executor"] for _, _, w in runs} == {"multiprocess"}
    overlapping = [
        (a, b) for i, a in enumerate(runs) for b in runs[i + 1 :] if a[0] < b[1] and b[0] < a[1]
    ]
    assert overlapping, "no two cells ran at once"


def test_study_cells_run_as_ray_jobs(ray_address: str, tmp_path: Path) -> None:
    """`s2l study` on a Ray deployment: each cell's GPU step is a Ray job given one GPU."""
    env = deployment_env(tmp_path / "ray", "ray", RAY_ADDRESS=ray_address, OMP_NUM_THREADS="2")
    out = _study(
        env,
        ["--methods", "random", "--budgets", "0.2", "--seeds", "1", "--parallel", "2"],
        tmp_path / "study.log",
    )
    assert out["cells"] == 2 and not out["failed_cells"] and out["recommendation"]
    runs = _cell_runs(Path(env["DAGSTER_HOME"]))
    assert len(runs) == 2
    for _, _, worker in runs:
        assert worker["executor"] == "ray"
        assert worker["ray_job"].startswith("dagster-step-")
        assert worker["CUDA_VISIBLE_DEVICES"] in ("0", "1")
