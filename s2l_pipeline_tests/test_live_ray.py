"""The tiny graph on two GPUs of one machine (multiprocess), against in-process; study cells on
the multiprocess executor and on a real local Ray cluster (a head on loopback, two logical GPUs).

The main job on Ray, with its proxy's worker SIGKILLed and retried, is compared with an
in-process run in test_live_stack, on the production-shaped stack.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from s2l_pipeline.deploy.job_runs import deployment_env, start_main_job, summarize
from s2l_pipeline.deploy.local_stack import start_local_ray, stop_group

from .live import FEWER_UNITS, THREADS, SharedInProcessRun, is_gpu_step, session_base

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """`ray start --head --num-cpus=2 --num-gpus=2` on 127.0.0.1, stopped after the module."""
    root = tmp_path_factory.mktemp("ray_head")
    head, address = start_local_ray(root, cpus=2, gpus=2)
    yield address
    stop_group(head)


@pytest.fixture(scope="module")
def in_process_run(tmp_path_factory):
    """The tiny main job in one process: what the other engines must reproduce, byte for byte
    (one run for the session, shared with the stack test: live.py)."""
    run = SharedInProcessRun(session_base(tmp_path_factory))
    try:
        yield run.finished  # called when compared: the test's own run starts meanwhile
    finally:
        run.stop()


def test_multiprocess_gives_each_gpu_step_its_own_gpu_and_the_same_bytes(
    in_process_run, tmp_path: Path
) -> None:
    """One machine with two GPUs: every step a process, GPU steps leasing GPU 0 or 1."""
    threads = THREADS

    multi = deployment_env(
        tmp_path / "multi", "multiprocess", S2L_GPUS="2", S2L_GPU_LEASE_DIR=str(tmp_path), **threads
    )
    proc = start_main_job(multi, tmp_path / "multi.log", FEWER_UNITS)
    assert proc.wait(timeout=900) == 0, (tmp_path / "multi.log").read_text()[-4000:]
    run = summarize(Path(multi["DAGSTER_HOME"]))
    baseline = in_process_run()

    assert run.status == "SUCCESS"
    for asset in ("loss_trajectories", "selected_subset", "target_model", "target_evaluation"):
        assert run.data_versions[asset] == baseline.data_versions[asset], asset
    gpu_steps = [k for k in run.step_s if is_gpu_step(k)]
    held = {k: run.workers[k][-1] for k in gpu_steps}
    assert {w["CUDA_VISIBLE_DEVICES"] for w in held.values()} <= {"0", "1"}, held
    # Steps holding a GPU at the same time held different ones. Whether two overlap at all is
    # the scheduler's timing (steps forked from a preloaded server can each end before the next
    # starts): where some did, both GPUs were in use.
    overlapping = [
        (a, b)
        for a, b in itertools.combinations(gpu_steps, 2)
        if held[a]["leased_at"] < held[b]["leased_at"] + held[b]["held_s"]
        and held[b]["leased_at"] < held[a]["leased_at"] + held[a]["held_s"]
    ]
    shared = [(a, b) for a, b in overlapping
              if held[a]["CUDA_VISIBLE_DEVICES"] == held[b]["CUDA_VISIBLE_DEVICES"]]  # fmt: skip
    assert not shared, (shared, held)
    print(f"{len(overlapping)} pairs of GPU steps held their GPUs at the same time")
    pids = {w["pid"] for w in held.values()}
    assert len(pids) == len(gpu_steps)  # every step its own process


def _study(env: dict[str, str], args: list[str], log: Path) -> dict:
    """`s2l study` in a deployment's environment, as a user runs it; its summary line. Its
    proxy keeps 3 checkpoints scored in one row shard: 3 scoring steps, not 15, each a Ray job
    or a process of its own (5-7 CPU-s apiece for Python, torch and the code location)."""
    import json
    import subprocess

    import yaml

    from .conftest import s2l_cmd

    config = log.with_suffix(".config.yaml")
    fewer = {"proxy_checkpoints": {"config": {"num_checkpoints": 2}}}
    config.write_text(yaml.safe_dump({"ops": {**FEWER_UNITS["ops"], **fewer}}))
    done = subprocess.run(
        [*s2l_cmd(), "study", *args, "--config", str(config)], env=env,
        cwd=env["DAGSTER_HOME"], capture_output=True, text=True, timeout=900,
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
    env = deployment_env(tmp_path / "ray", "ray", RAY_ADDRESS=ray_address, **THREADS)
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
