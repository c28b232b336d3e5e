"""Crashes as users meet them: `s2l run` killed with SIGKILL, then the same command again.

No human action in between: the rerun frees the dead run's gpu slot, says where it resumed,
and ends with checkpoints byte-identical to an uninterrupted run; killed during scoring, it
reuses the units already scored.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from .live import project_env, wait_for

pytestmark = pytest.mark.live

S2L = str(Path(sys.executable).with_name("s2l"))


def start(root: Path, config: dict, until: str) -> subprocess.Popen:
    env = project_env(root, "tiny")
    cfg = root / "run.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [S2L, "run", "--config", str(cfg), "--until", until],
        cwd=root / "home",
        env=env,
        stdout=(root / "s2l_run.log").open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def finish(root: Path, config: dict, until: str, timeout: float = 600) -> str:
    """Run up to ``until``; the output of this invocation."""
    before = (root / "s2l_run.log").stat().st_size if (root / "s2l_run.log").exists() else 0
    proc = start(root, config, until)
    assert proc.wait(timeout=timeout) == 0, (root / "s2l_run.log").read_text()[-4000:]
    return (root / "s2l_run.log").read_text()[before:]


def kill_when(root: Path, config: dict, until: str, what: str, ready) -> None:
    proc = start(root, config, until)
    try:
        wait_for(what, lambda: ready() or proc.poll() is not None, timeout=600, every=0.2)
        assert proc.poll() is None, f"the run ended before {what}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def proxy_manifest(root: Path) -> dict:
    path = root / "artifacts" / "_manifests" / "proxy_checkpoints" / "__unpartitioned__.json"
    return json.loads(path.read_text())


def instance_at(root: Path, monkeypatch) -> dg.DagsterInstance:
    monkeypatch.chdir(root / "home")  # dagster.yaml keeps its storage relative to it
    return dg.DagsterInstance.from_config(str(root / "home"))


# 208 steps, a Trainer checkpoint every 26: the kill lands after the second (step 52), with
# three quarters of the training (about 4 s on an idle machine, more under load) still to go.
# It trained 60 epochs killed at half-way: three times the steps for the same proof.
LONG_PROXY = {"ops": {"proxy_checkpoints": {"config": {"epochs": 16.0, "num_checkpoints": 8}}}}
# What each test checks ends there: the later steps would only add minutes.
PROXY, SCORING = "proxy_checkpoints", "loss_trajectories"


def test_sigkill_during_proxy_training_then_rerun(tmp_path: Path, monkeypatch) -> None:
    clean = tmp_path / "clean"
    finish(clean, LONG_PROXY, PROXY)
    reference = [c["sha256"] for c in proxy_manifest(clean)["checkpoints"]]

    crashed = tmp_path / "crashed"
    work = crashed / "data" / "work" / "proxy"  # S2L_DATA_DIR, not the current directory
    kill_when(
        crashed,
        LONG_PROXY,
        PROXY,
        "the proxy's second Trainer checkpoint",
        lambda: len(list(work.glob("*/checkpoint-*/rng_state.pth"))) >= 2,
    )
    instance = instance_at(crashed, monkeypatch)
    [dead] = instance.get_run_records()
    assert dead.dagster_run.status == dg.DagsterRunStatus.STARTED  # nobody told Dagster

    out = finish(crashed, LONG_PROXY, PROXY)
    assert "died with its process" in out and "marked failed" in out
    assert "resumed from step" in out
    assert [c["sha256"] for c in proxy_manifest(crashed)["checkpoints"]] == reference
    statuses = {r.dagster_run.run_id: r.dagster_run.status for r in instance.get_run_records()}
    assert statuses[dead.dagster_run.run_id] == dg.DagsterRunStatus.FAILURE
    assert list(statuses.values()).count(dg.DagsterRunStatus.SUCCESS) == 1


def test_sigkill_during_scoring_reuses_finished_units(tmp_path: Path) -> None:
    # 8 row shards x 5 checkpoints: 40 units, killed after 10 (20-row shards made 100).
    config = {
        "ops": {"loss_trajectories": {"ops": {"plan_scoring": {"config": {"shard_rows": 50}}}}}
    }
    units = tmp_path / "artifacts" / "loss_trajectories" / "units"
    kill_when(
        tmp_path,
        config,
        SCORING,
        "ten scoring units to finish",
        lambda: len(list(units.glob("*.parquet"))) >= 10,
    )
    done = {p.name for p in units.glob("*.parquet")}
    out = finish(tmp_path, config, SCORING)
    assert "already scored" in out
    reused = [line for line in out.splitlines() if "already scored" in line]
    assert len(reused) >= len(done) >= 10

    # The artifact store is lost (emptied, or S2L_ARTIFACT_ROOT moved): the resume records no
    # longer hold; the same command makes everything again instead of pointing at nothing.
    import shutil

    shutil.rmtree(tmp_path / "artifacts")
    out = finish(tmp_path, config, SCORING)
    assert "not in the store any more" in out
    manifest = proxy_manifest(tmp_path)
    assert all(Path(c["uri"], "model.safetensors").exists() for c in manifest["checkpoints"])
