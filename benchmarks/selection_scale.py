"""Clustering + S2L selection of 10 million synthetic trajectories on this machine.

    python benchmarks/selection_scale.py [--rows 10000000] [--steps 12] [--clusters 100]
        [--budget 0.1]

Each mode runs in its own process (so peak memory is its own) on the same synthetic data:
  all       faiss K-means trained on every point (our default), then balanced sampling;
  sampled   faiss's own default: trained on 256 points per centroid, then balanced sampling;
  pipeline  the full library path the assets and CLI run (a polars table with example_id
            strings -> cluster_table -> choose).
Prints seconds (generation excluded); peak memory: the trajectory matrix plus the peak RSS the
mode adds on top of the process holding the data (peak tracking is reset after generation),
also as a multiple of the float32 matrix; and the K-means inertia (lower is better).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    return _status("VmRSS:")


def reset_peak() -> None:
    """Start peak tracking afresh (Linux: writing 5 to clear_refs resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mb() -> float:
    return _status("VmHWM:")


def synthetic(rows: int, steps: int, seed: int = 0) -> np.ndarray:
    """Loss curves from 200 latent shapes (start, floor, speed) plus noise; float32, no temps."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, steps, dtype=np.float32)
    shapes = 200
    start = rng.uniform(3, 7, shapes).astype(np.float32)
    floor = rng.uniform(0.1, 3, shapes).astype(np.float32)
    speed = rng.uniform(1, 10, shapes).astype(np.float32)
    curves = floor[:, None] + (start - floor)[:, None] * np.exp(-speed[:, None] * t[None, :])
    x = np.empty((rows, steps), dtype=np.float32)
    chunk = 1_000_000
    for s in range(0, rows, chunk):
        e = min(rows, s + chunk)
        which = rng.integers(0, shapes, e - s)
        x[s:e] = rng.standard_normal((e - s, steps), dtype=np.float32)
        x[s:e] *= 0.15
        x[s:e] += curves[which]
    return x


def run_mode(mode: str, rows: int, steps: int, k: int, budget: float) -> dict:
    x = synthetic(rows, steps)
    n_budget = int(budget * rows)
    if mode == "pipeline":
        import polars as pl

        from s2l_pipeline.core.selection import SelectionOptions, cluster_table
        from s2l_pipeline.core.stages.selection import choose_subset

        traj = pl.DataFrame({"example_id": pl.int_range(rows, eager=True).cast(pl.String)})
        traj = traj.with_columns([pl.Series(f"loss_step_{i + 1}", x[:, i]) for i in range(steps)])
        del x
        reset_peak()
        base = rss_mb()
        t = time.perf_counter()
        opts = SelectionOptions(clusters=k, max_train_points=rows)
        clusters, summary = cluster_table(traj, None, 0, opts)
        chosen = choose_subset("s2l", traj, None, n_budget, 0, opts, clusters)
        secs = time.perf_counter() - t
        inertia, picked = summary.inertia, chosen.ids.height
    else:
        from s2l_pipeline.core.selection.budget import sample_balanced
        from s2l_pipeline.core.selection.clustering import kmeans

        reset_peak()
        base = rss_mb()
        t = time.perf_counter()
        cap = rows if mode == "all" else 256 * k
        cl = kmeans(x, k, seed=0, niter=20, max_train_points=cap)
        rows_picked = sample_balanced(cl.labels, n_budget, np.random.default_rng(0))
        secs = time.perf_counter() - t
        inertia, picked = cl.inertia, len(rows_picked)
    matrix_mb = rows * steps * 4 / 2**20
    added = peak_mb() - base
    return {
        "mode": mode,
        "seconds": secs,
        "peak_added_mb": added,
        "peak_vs_matrix": (added + matrix_mb) / matrix_mb,
        "matrix_mb": matrix_mb,
        "inertia": inertia,
        "selected": picked,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.rows, args.steps, args.clusters, args.budget)))
        return
    print(f"rows={args.rows:,} steps={args.steps} K={args.clusters} budget={args.budget}")
    print(
        f"{'mode':<10}{'seconds':>9}{'peak MB (incl. matrix)':>24}{'x matrix':>10}"
        f"{'inertia':>16}{'selected':>11}"
    )
    for mode in ("all", "sampled", "pipeline"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--rows",
                str(args.rows),
                "--steps",
                str(args.steps),
                "--clusters",
                str(args.clusters),
                "--budget",
                str(args.budget),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{mode:<10}{r['seconds']:>9.1f}{r['peak_added_mb'] + r['matrix_mb']:>24,.0f}"
            f"{r['peak_vs_matrix']:>9.2f}x{r['inertia']:>16,.0f}{r['selected']:>11,}"
        )


if __name__ == "__main__":
    main()
