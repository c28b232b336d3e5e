"""Executor choice per deployment and the multiprocess GPU lease (real processes, real locks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from s2l_pipeline.defs import executors

from .conftest import PROJECT_ROOT


def _definitions_under(env: dict[str, str], code: str) -> str:
    """Run ``code`` after loading the definitions in a fresh interpreter with ``env`` set (the
    executor is chosen when the code location loads)."""
    full = {**os.environ, **env}
    out = subprocess.run(
        [sys.executable, "-c", "import s2l_pipeline.definitions as d\n" + textwrap.dedent(code)],
        env=full,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_each_deployment_gets_its_executor_and_the_same_graph() -> None:
    code = """
        import json
        job = d.defs.resolve_job_def("s2l_job")
        ops = sorted(n.name for n in job.graph.node_dict.values())
        retry = d.defs.resolve_job_def("s2l_job").graph.node_named("proxy_checkpoints")
        print(json.dumps({"executor": job.executor_def.name, "ops": ops,
                          "auto": d.defs.resolve_implicit_global_asset_job_def().executor_def.name,
                          "retry": retry.definition.retry_policy is not None}))
    """
    seen = {}
    for name in ("in_process", "multiprocess", "ray", "k8s"):
        seen[name] = json.loads(_definitions_under({"S2L_EXECUTOR": name}, code))
    assert seen["in_process"]["executor"] == "in_process"
    assert seen["multiprocess"]["executor"] == "s2l_multiprocess"
    assert seen["ray"]["executor"] == "s2l_ray"
    assert seen["k8s"]["executor"] == "s2l_k8s"
    for name, info in seen.items():
        assert info["ops"] == seen["in_process"]["ops"], name  # the graph never changes
        assert info["auto"] == info["executor"], name  # automation's runs use it too
    # Lost workers are retried only where a remote engine stops canceled steps itself.
    assert [seen[n]["retry"] for n in executors.EXECUTORS] == [False, False, True, True]


def test_unknown_executor_fails_loudly(monkeypatch) -> None:
    monkeypatch.setenv("S2L_EXECUTOR", "dask")
    with pytest.raises(ValueError, match="S2L_EXECUTOR='dask' is not an executor"):
        executors.active_executor()


def test_gpu_steps_ask_for_a_gpu_and_cpu_steps_for_none() -> None:
    from s2l_pipeline.definitions import defs

    job = defs.resolve_job_def("s2l_job")
    tags = {}
    for node in job.graph.node_dict.values():
        for inner in getattr(node.definition, "node_dict", {node.name: node}).values():
            tags[inner.name] = inner.definition.tags
    gpu = {k for k, t in tags.items() if t.get("s2l/device") == "gpu"}
    assert gpu == {
        "proxy_checkpoints",
        "score_trajectory_unit",
        "target_model",
        "target_evaluation",
    }
    for name, t in tags.items():
        ray = json.loads(t["dagster-ray/config"])
        k8s = json.loads(t["dagster-k8s/config"]) if isinstance(t["dagster-k8s/config"], str) else t
        limits = k8s["container_config"]["resources"].get("limits", {})
        if name in gpu:
            assert ray["num_gpus"] == 1 and limits["nvidia.com/gpu"] == "1", name
        else:
            assert "num_gpus" not in ray and "nvidia.com/gpu" not in limits, name


LEASE = """
import os, sys, time
from s2l_pipeline.defs.executors import gpu_lease
with gpu_lease() as gpu:
    print(gpu, flush=True)
    time.sleep(float(sys.argv[1]))
"""


def _leaser(env: dict[str, str], hold_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LEASE, str(hold_s)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_multiprocess_gpu_lease_gives_each_step_its_own_gpu(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "S2L_EXECUTOR": "multiprocess",
        "S2L_GPUS": "2",
        "S2L_GPU_LEASE_DIR": str(tmp_path),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    first, second = _leaser(env, 6), _leaser(env, 6)
    got = {first.stdout.readline().strip(), second.stdout.readline().strip()}
    assert got == {"0", "1"}  # two steps at once: two different GPUs
    third = _leaser(env, 0)  # both GPUs held: it waits for one
    first.kill()  # a killed step's lock goes with its process
    assert third.stdout.readline().strip() in ("0", "1")
    for proc in (first, second, third):
        proc.wait(timeout=30)


def test_lease_leaves_devices_alone_elsewhere(monkeypatch) -> None:
    monkeypatch.setenv("S2L_EXECUTOR", "ray")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with executors.gpu_lease() as gpu:
        assert gpu == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_a_missing_extra_says_what_to_install(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name.startswith("dagster_ray"):
            raise ImportError("No module named 'dagster_ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setenv("S2L_EXECUTOR", "ray")
    monkeypatch.delitem(sys.modules, "dagster_ray", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[ray\]'"):
        executors.deployment_executor()
