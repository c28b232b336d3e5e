"""Where steps run, chosen per deployment by ``S2L_EXECUTOR``; the asset graph never changes.

- ``in_process`` (default): every step in the run's process. On a laptop starting a process
  and importing torch per step costs more than most steps.
- ``multiprocess``: one machine with several GPUs. At most ``S2L_GPUS`` GPU steps at once, each
  holding one GPU (``CUDA_VISIBLE_DEVICES``) through a lock file for as long as it runs.
- ``ray``: dagster-ray's executor; every step is a Ray job on the cluster at ``RAY_ADDRESS``
  (the dashboard URL), GPU steps ask Ray for ``num_gpus=1`` and Ray sets their devices.
- ``k8s``: dagster-k8s's ``k8s_job_executor``; every step is a Kubernetes Job, GPU steps ask for
  an ``nvidia.com/gpu`` limit on GPU nodes (node selector and toleration below).

GPU steps (proxy training, each scoring unit, target training, evaluation) carry
:func:`gpu_step_tags`; every other step :func:`cpu_step_tags`. The engines read their own keys.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

EXECUTOR_ENV = "S2L_EXECUTOR"
EXECUTORS = ("in_process", "multiprocess", "ray", "k8s")
DEVICE_TAG = "s2l/device"

# Environment the step processes of a remote engine need to find the deployment; credentials
# are not forwarded: Ray nodes and k8s pods get them from their own environment (secrets).
FORWARDED_ENV = (
    "DAGSTER_HOME",
    "S2L_PROFILE",
    "S2L_EXECUTOR",
    "S2L_ARTIFACT_ROOT",
    "S2L_SHARD_ROOT",
    "S2L_DATA_DIR",
    "S2L_CACHE_DIR",
    "S2L_STORAGE_RETRY_S",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "HF_HOME",
    "PYTHONUNBUFFERED",
    # CPU math runs on this many threads; the sums (and so the bytes of every checkpoint) depend
    # on it. Ray sets 1 for a job that asked for one CPU unless it is forwarded.
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)

# Where GPU nodes are in a typical cluster (NVIDIA's GPU feature discovery label and the taint
# GPU node pools carry); both can be replaced through S2L_K8S_GPU_NODE_SELECTOR / _TOLERATIONS.
DEFAULT_GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
DEFAULT_GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


# The k8s executor's own settings: none. Image, namespace, service account, environment and
# secrets reach run and step pods from the Helm chart (the run launcher, and the user code
# deployment's includeConfigInLaunchedRuns; infra/helm/values.yaml).
K8S_EXECUTOR_CONFIG: dict[str, Any] = {}


def active_executor() -> str:
    """The deployment's engine, from ``S2L_EXECUTOR``; an unknown name fails loudly at load."""
    name = os.environ.get(EXECUTOR_ENV, "in_process") or "in_process"
    if name not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r} is not an executor; known: {list(EXECUTORS)}")
    return name


def gpu_count() -> int:
    """GPUs one multiprocess deployment shares out (``S2L_GPUS``, default 1); torch is not asked
    here, because asking initializes CUDA in the parent before a step can pick its device."""
    return max(1, int(os.environ.get("S2L_GPUS", "1")))


def _json_env(name: str, default: Any) -> Any:
    raw = os.environ.get(name)
    return json.loads(raw) if raw else default


def gpu_step_tags() -> dict[str, Any]:
    """One GPU, in each engine's own terms."""
    return {
        DEVICE_TAG: "gpu",
        "dagster-ray/config": {"num_gpus": 1, "num_cpus": 1},
        "dagster-k8s/config": {
            "container_config": {
                "resources": {
                    "requests": {"cpu": "2", "memory": "8Gi"},
                    "limits": {"nvidia.com/gpu": "1", "memory": "16Gi"},
                }
            },
            "pod_spec_config": {
                "node_selector": _json_env("S2L_K8S_GPU_NODE_SELECTOR", DEFAULT_GPU_NODE_SELECTOR),
                "tolerations": _json_env("S2L_K8S_GPU_TOLERATIONS", DEFAULT_GPU_TOLERATIONS),
            },
        },
    }


def cpu_step_tags() -> dict[str, Any]:
    """No GPU: one CPU and some memory, so the engines can pack these steps anywhere."""
    return {
        DEVICE_TAG: "cpu",
        "dagster-ray/config": {"num_cpus": 1},
        "dagster-k8s/config": {
            "container_config": {
                "resources": {
                    "requests": {"cpu": "1", "memory": "2Gi"},
                    "limits": {"memory": "8Gi"},
                }
            }
        },
    }


def lost_worker_retry_policy() -> dg.RetryPolicy | None:
    """Every step of a job on a remote engine retries a lost worker: under load Ray's job
    supervisor can die before a step starts (seen in CI on a CPU step, selected_subset), and a
    pod can be evicted. In one process there is none (see gpu_retry_policy)."""
    return gpu_retry_policy()


def gpu_retry_policy() -> dg.RetryPolicy | None:
    """A lost worker (node gone, OOM-killed pod, killed Ray job) is retried on a remote engine.

    In one process Dagster's ``RetryPolicy`` would also retry a step interrupted by a cancel, so
    there GPU steps keep none (``runtime.retried_on_error`` retries ordinary errors). Remote
    engines stop a canceled step by stopping its job, and the run is not re-planned after that.
    """
    if active_executor() in ("ray", "k8s"):
        return dg.RetryPolicy(max_retries=2, delay=5)
    return None


def _extra(module: str, attr: str, extra: str) -> Any:
    """``module.attr`` from an optional extra, or an error that says what to install."""
    import importlib

    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ImportError(
            f"{EXECUTOR_ENV}={active_executor()} needs the {extra!r} extra: "
            f"pip install -e '.[{extra}]' ({exc})"
        ) from exc


# Each multiprocess step forks from a server that imported these once, where a spawned step
# imported them anew: about 4 CPU-s a step (docs/benchmarks.md, "forkserver"). `transformers`
# alone is a lazy shell: the Trainer, the model classes and the tokenizers behind it are another
# 2.4 s a step that loads a model. Importing them starts no thread and touches no GPU, so a
# forked step still leases its GPU before CUDA starts.
FORKSERVER_PRELOAD = (
    "dagster",
    "s2l_pipeline.definitions",
    "torch",
    "transformers",
    "mlflow",
    "s2l_pipeline.core.lm.trainer",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.gpt_neox.modeling_gpt_neox",
)


def deployment_executor() -> dg.ExecutorDefinition:
    """The executor of every job of this deployment (see the module docstring)."""
    name = active_executor()
    gpu_limit = {"key": DEVICE_TAG, "value": "gpu", "limit": gpu_count()}
    if name == "multiprocess":
        return dg.multiprocess_executor.configured(
            {
                "max_concurrent": os.cpu_count() or 2,
                "tag_concurrency_limits": [gpu_limit],
                "start_method": {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}},
            },
            name="s2l_multiprocess",
        )
    if name == "ray":
        ray_executor = _extra("dagster_ray", "ray_executor", "ray")

        return ray_executor.configured(
            # No address: Ray's client reads RAY_ADDRESS (the dashboard, http://head:8265).
            {"ray": {"env_vars": list(FORWARDED_ENV)}},
            name="s2l_ray",
        )
    if name == "k8s":
        k8s_job_executor = _extra("dagster_k8s", "k8s_job_executor", "k8s")
        return k8s_job_executor.configured(K8S_EXECUTOR_CONFIG, name="s2l_k8s")
    return dg.in_process_executor


def _ray_job_id() -> str | None:
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    return json.loads(raw).get("metadata", {}).get("job_submission_id")


def worker_metadata() -> dict[str, Any]:
    """Where this step ran and which GPU it was given: recorded in the step's metadata."""
    return {
        "executor": active_executor(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "ray_job": _ray_job_id(),
        "k8s_pod": os.environ.get("HOSTNAME")
        if os.environ.get("KUBERNETES_SERVICE_HOST")
        else None,
    }


def _lease_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"s2l-gpu-leases-{os.getuid()}"
    path = Path(os.environ.get("S2L_GPU_LEASE_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def gpu_lease(log=None, poll_s: float = 1.0) -> Iterator[str | None]:
    """Under ``multiprocess``, hold one free GPU for this step (``CUDA_VISIBLE_DEVICES``).

    A lock file per GPU; the kernel drops a lock when its process dies, so a killed step never
    keeps a GPU. Elsewhere the engine (Ray, Kubernetes) or the user chose the device already.
    Must run before the step touches CUDA.
    """
    if active_executor() != "multiprocess" or "CUDA_VISIBLE_DEVICES" in os.environ:
        yield os.environ.get("CUDA_VISIBLE_DEVICES")
        return
    waited = False
    while True:
        for gpu in range(gpu_count()):
            handle = (_lease_dir() / f"gpu{gpu}.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
            try:
                yield str(gpu)
            finally:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if not waited and log is not None:
            log(f"all {gpu_count()} GPUs are leased; waiting for one")
        waited = True
        time.sleep(poll_s)


def on_gpu(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a GPU step's body under :func:`gpu_lease`, and record :func:`worker_metadata` as its
    output's ``worker`` metadata (which GPU it was given, on which engine, and when it held it:
    steps whose leases overlapped must have had different GPUs)."""

    @functools.wraps(fn)
    def step(context, *args: Any, **kwargs: Any) -> dg.Output:
        with gpu_lease(context.log.info):
            leased_at = time.time()
            out = fn(context, *args, **kwargs)
            held = {"leased_at": leased_at, "held_s": time.time() - leased_at}
            worker = dg.MetadataValue.json({**worker_metadata(), **held})
        if isinstance(out, dg.Output):
            return out.with_metadata({**out.metadata, "worker": worker})
        return dg.Output(out, metadata={"worker": worker})

    return step
