"""Benchmarks run as a user runs them: the GPU check at its smoke scale, on CPU."""

import json
import sys
from pathlib import Path

import pytest

from .conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_gpu_check_runs_end_to_end_at_the_smoke_scale(tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh, as a lent GPU machine would run it, at the tiny scale on CPU:
    the throughput figures, the main job, the random target beside it, the summary page."""
    import os
    import subprocess

    out = tmp_path / "gpu_check"
    env = {**os.environ, "S2L_GPU_CHECK_SMOKE": "1", "PYTHON": sys.executable}
    res = subprocess.run(
        ["bash", str(PROJECT_ROOT / "benchmarks" / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "official tok/s" in summary and "| in_domain_accuracy |" in summary
    sel, rnd = (json.loads((out / f"{n}.json").read_text()) for n in ("selected", "random"))
    assert sel["success"] and rnd["success"] and rnd["training_set"] == "random"
    assert sel["subset"] == rnd["subset"]  # the same subset; only the target's rows differ
