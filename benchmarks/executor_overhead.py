"""What a step costs on the Ray executor against in-process, on the tiny graph.

Starts a Ray head on loopback (``--num-cpus 2 --num-gpus 2``, logical GPUs), runs s2l_job at the
tiny scale once in-process and once on Ray (each step a Ray job), and prints, side by side: the
run's wall time, the time from a step's launch to its start (a new process importing torch and
the code location) and the steps' own time. Ratios, not absolute times: the machine is noisy.

    .venv/bin/python benchmarks/executor_overhead.py [--profile tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from s2l_pipeline.deploy.job_runs import deployment_env, start_main_job, summarize
from s2l_pipeline.deploy.local_stack import start_local_ray, stop_group


def run(root: Path, executor: str, profile: str, **extra: str):
    env = deployment_env(root, executor, profile, **extra)
    proc = start_main_job(env, root.with_suffix(".log"))
    if proc.wait(timeout=3600) != 0:
        raise SystemExit(root.with_suffix(".log").read_text()[-3000:])
    return summarize(Path(env["DAGSTER_HOME"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="s2l-executors-"))
    head, ray_address = start_local_ray(root, cpus=2, gpus=2)
    try:
        # The same thread count on both (Ray gives a 1-CPU job one thread unless told), so the
        # two runs must produce the same bytes.
        threads = {"OMP_NUM_THREADS": str(os.cpu_count() or 2)}
        local = run(root / "in_process", "in_process", args.profile, **threads)
        ray = run(root / "ray", "ray", args.profile, RAY_ADDRESS=ray_address, **threads)
    finally:
        stop_group(head)

    launch = sorted(ray.launch_to_start_s.values())
    common = sorted(set(local.step_s) & set(ray.step_s))
    local_steps = sum(local.step_s[k] for k in common)
    ray_steps = sum(ray.step_s[k] for k in common)
    print(f"profile {args.profile}: {len(ray.step_s)} steps, 2 CPUs, 2 logical GPUs")
    print(f"{'':32s}{'in-process':>12s}{'ray':>12s}{'ratio':>8s}")
    print(f"{'run wall time (s)':32s}{local.wall_s:12.1f}{ray.wall_s:12.1f}"
          f"{ray.wall_s / local.wall_s:8.2f}")  # fmt: skip
    print(f"{'sum of step times (s)':32s}{local_steps:12.1f}{ray_steps:12.1f}"
          f"{ray_steps / local_steps:8.2f}")  # fmt: skip
    print(f"{'launch -> step start, median (s)':32s}{0.0:12.1f}{statistics.median(launch):12.1f}")
    print(f"{'launch -> step start, max (s)':32s}{0.0:12.1f}{max(launch):12.1f}")
    per_step = (ray.wall_s - local.wall_s) / len(ray.step_s)
    print(f"overhead per step (wall difference / steps): {per_step:.1f} s")
    same = ray.data_versions == local.data_versions
    print(f"same data versions on both: {same}")


if __name__ == "__main__":
    main()
