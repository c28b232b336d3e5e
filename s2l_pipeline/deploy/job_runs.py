"""Run the main job in a throwaway deployment folder with a chosen executor, and read back what
it did (for the executor tests and ``benchmarks/executor_overhead.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def deployment_env(root: Path, executor: str, profile: str = "tiny", gpu_slots: int = 2,
                   **extra: str) -> dict[str, str]:  # fmt: skip
    """Environment of a deployment under ``root``: its own instance (absolute paths, since step
    processes of remote engines start elsewhere), artifacts, cache, and ``executor``."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    base = home / "data" / "dagster"
    config["storage"]["sqlite"]["base_dir"] = str(base / "storage")
    config["local_artifact_storage"]["config"]["base_dir"] = str(base)
    config["compute_logs"]["config"]["base_dir"] = str(base / "logs")
    config["concurrency"]["pools"]["default_limit"] = gpu_slots
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "S2L_"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(
        DAGSTER_HOME=str(home),
        S2L_PROFILE=profile,
        S2L_EXECUTOR=executor,
        S2L_ARTIFACT_ROOT=str(root / "artifacts"),
        S2L_SHARD_ROOT=str(root / "shards"),
        S2L_DATA_DIR=str(root / "data"),
        S2L_CACHE_DIR=str(root / "cache"),
        PYTHONUNBUFFERED="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    )
    return env


def start_main_job(
    env: dict[str, str], log: Path, run_config: dict | None = None
) -> subprocess.Popen:
    """``dagster job execute`` of s2l_job (partition ``selected``), as a user starts it, with
    ``run_config`` (written beside the log) over the deployment's defaults."""
    cmd = [
        str(Path(sys.executable).with_name("dagster")),
        "job",
        "execute",
        "-m",
        "s2l_pipeline.definitions",
        "-j",
        "s2l_job",
        "--tags",
        json.dumps({"dagster/partition": "selected"}),
    ]
    if run_config:
        config = log.with_suffix(".run_config.yaml")
        config.write_text(yaml.safe_dump(run_config))
        cmd += ["-c", str(config)]
    return subprocess.Popen(
        cmd,
        cwd=env["DAGSTER_HOME"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@dataclass
class RunSummary:
    """What one run produced and how its steps went, read from its instance."""

    run_id: str
    status: str
    wall_s: float
    data_versions: dict[str, str]
    headline: dict[str, float]
    workers: dict[str, list[dict[str, Any]]]  # step key -> worker metadata of each output
    retried: list[str]
    launch_to_start_s: dict[str, float]  # step key -> seconds from worker launch to step start
    step_s: dict[str, float]  # step key -> seconds from step start to its end


def summarize(home: Path, run_id: str | None = None) -> RunSummary:
    """The run ``run_id`` (else the latest run) of the instance at ``home``."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    run = instance.get_run_by_id(run_id) if run_id else instance.get_runs(limit=1)[0]
    records = instance.all_logs(run.run_id)
    versions, headline, workers, retried = {}, {}, {}, []
    launched, started, ended = {}, {}, {}
    for rec in records:
        ev = rec.dagster_event
        if ev is None:
            continue
        kind, key, ts = ev.event_type_value, ev.step_key, rec.timestamp
        if kind == "ASSET_MATERIALIZATION":
            mat = ev.event_specific_data.materialization
            versions[mat.asset_key.to_user_string()] = mat.tags.get("dagster/data_version", "")
            if mat.asset_key.to_user_string() == "target_evaluation":
                headline = {
                    k: v.value for k, v in mat.metadata.items() if isinstance(v.value, float)
                }
        elif kind == "STEP_OUTPUT":
            meta = ev.event_specific_data.metadata or {}
            if "worker" in meta:
                workers.setdefault(key, []).append(meta["worker"].value)
        elif kind == "STEP_UP_FOR_RETRY":
            retried.append(key)
        elif kind == "STEP_WORKER_STARTING":
            launched.setdefault(key, ts)
        elif kind == "STEP_START":
            started.setdefault(key, ts)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            ended[key] = ts
    times = [r.timestamp for r in records]
    return RunSummary(
        run_id=run.run_id,
        status=run.status.value,
        wall_s=max(times) - min(times),
        data_versions=versions,
        headline=headline,
        workers=workers,
        retried=retried,
        launch_to_start_s={k: started[k] - t for k, t in launched.items() if k in started},
        step_s={k: ended[k] - t for k, t in started.items() if k in ended},
    )
