"""Peak RSS and wall time of the gradient check (`clusters_group_similar_gradients`) on a pool,
beside its former way of encoding every row of the pool, in the same invocation.

    python benchmarks/premise_memory.py --pool DIR --clusters FILE --model DIR --max-length N

``--pool`` is a training_pool artifact folder (train.parquet, trajectories.parquet),
``--clusters`` a trajectory_clusters clusters.parquet, ``--model`` a proxy checkpoint folder.
Each arm runs in a fresh process (its peak RSS is the process's own, torch and the model
included): ``sampled`` is premise_on_pool as the check calls it, reading only the columns it
needs; ``every_row`` reads the whole table, joins every row's text and encodes every row,
then sketches the same sampled rows. Both must report the same numbers: the run says so.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ARMS = ("every_row", "sampled")


def run_arm(arm: str, pool: Path, clusters: Path, model: Path, max_length: int) -> dict:
    """One arm in this process: the report, seconds, and this process's peak RSS."""

    from s2l_pipeline.core.selection.diagnostics import (
        POOL_COLUMNS,
        premise_on_pool,
    )
    from s2l_pipeline.core.support.tables import read_table

    start = time.perf_counter()
    traj = read_table(str(pool / "trajectories.parquet"))
    labels = read_table(str(clusters))
    if arm == "sampled":
        data = read_table(str(pool / "train.parquet"), columns=POOL_COLUMNS)
        report = premise_on_pool(traj, data, labels, model, max_length)
    else:
        report = _every_row(
            traj, read_table(str(pool / "train.parquet")), labels, model, max_length
        )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"arm": arm, "seconds": seconds, "peak_rss_gib": peak / 2**30, **report.to_dict()}


def _every_row(traj, data, clusters, model_dir, max_length):
    """The check as it was until 2026-11-28: every row's text joined and encoded."""
    import numpy as np
    import torch

    from s2l_pipeline.core.lm.encoding import encode
    from s2l_pipeline.core.lm.models import load_causal_lm
    from s2l_pipeline.core.selection.common import matrix, pick_steps
    from s2l_pipeline.core.selection.diagnostics import premise_report

    rows = clusters.select("example_id", "cluster").join(
        traj, on="example_id", how="inner", maintain_order="left"
    )
    cols = [
        c
        for c in ("prompt", "response", "task", "source", "answer", "messages")
        if c in data.columns
    ]
    rows = rows.join(
        data.select("example_id", *cols), on="example_id", how="inner", maintain_order="left"
    )
    model, tokenizer = load_causal_lm(model_dir)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    enc = encode(rows, tokenizer, max_length)
    keep = np.flatnonzero(enc.n_response_tokens > 0)
    rows = rows[keep]
    has_answers = "answer" in rows.columns and rows["answer"].null_count() == 0
    return premise_report(
        model,
        lambda idx: enc.subset(keep[idx]),
        rows["cluster"].to_numpy(),
        matrix(rows, pick_steps(rows, None, "trained")),
        sources=rows["source"].to_numpy() if "source" in rows.columns else None,
        answers=rows["answer"].to_numpy() if has_answers else None,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=Path, required=True)
    ap.add_argument("--clusters", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--max-length", type=int, required=True)
    ap.add_argument("--arm", choices=ARMS, help="internal: run one arm, print its JSON")
    ap.add_argument("--out", type=Path, help="write the figures here as JSON")
    a = ap.parse_args()
    if a.arm:
        print(json.dumps(run_arm(a.arm, a.pool, a.clusters, a.model, a.max_length)))
        return
    results = []
    for arm in ARMS:
        cmd = [sys.executable, __file__, "--arm", arm, "--pool", str(a.pool)]
        cmd += ["--clusters", str(a.clusters), "--model", str(a.model)]
        cmd += ["--max-length", str(a.max_length)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    base, new = results
    print(f"{'arm':<10} {'seconds':>9} {'peak RSS GiB':>13}  gap")
    for r in results:
        print(f"{r['arm']:<10} {r['seconds']:>9.1f} {r['peak_rss_gib']:>13.2f}  {r['gap']}")
    keys = [k for k in base if k not in ("arm", "seconds", "peak_rss_gib")]
    same = all(base[k] == new[k] for k in keys)
    print(
        f"sampled/every_row: time {new['seconds'] / base['seconds']:.2f}x, "
        f"peak RSS {new['peak_rss_gib'] / base['peak_rss_gib']:.2f}x; same report: {same}"
    )
    if a.out:
        a.out.write_text(json.dumps({"arms": results, "same_report": same}, indent=2) + "\n")
    if not same:
        sys.exit("the two arms disagree: the sampled check is not the check it replaced")


if __name__ == "__main__":
    main()
