"""`s2l study` on the tiny embedded data, one cell at a time against two at a time (the
multiprocess executor with two GPU slots), in fresh deployments: the cells' wall time side
by side, and the estimate printed before each study against what its cells took.

    .venv/bin/python benchmarks/study_parallel.py [--seeds 2]

On a CPU machine each cell's torch runs on OMP_NUM_THREADS=1, so two cells fit 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2l_pipeline.deploy.job_runs import deployment_env  # noqa: E402


def study(root: Path, parallel: int, seeds: int) -> dict:
    env = deployment_env(
        root, "multiprocess", S2L_GPUS="2", S2L_GPU_LEASE_DIR=str(root), OMP_NUM_THREADS="1"
    )
    exe = Path(sys.executable).with_name("s2l")
    cmd = [str(exe), "study", "--methods", "s2l,random", "--budgets", "0.1,0.3",
           "--seeds", str(seeds), "--parallel", str(parallel)]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=env["DAGSTER_HOME"], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {**out, "wall_seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    args = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for parallel in (1, 2):
            rows[parallel] = study(Path(tmp) / f"p{parallel}", parallel, args.seeds)
    one, two = rows[1], rows[2]
    print("| cells at once | cells | cells' wall s | estimated s | whole command s |")
    print("|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['cells_run']} | {r['cells_seconds']} | {r['estimated_seconds']} | "
              f"{r['wall_seconds']} |")  # fmt: skip
    print(f"speedup of 2 at once: {one['cells_seconds'] / two['cells_seconds']:.2f}x")
    same = one["recommendation"] == two["recommendation"]
    print(f"same recommendation both ways: {same}")


if __name__ == "__main__":
    main()
