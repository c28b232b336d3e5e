"""Each selector against random, read by seed: the seed is the unit of replication.

    python benchmarks/seed_stats.py [RESULTS.jsonl] [--domain in_domain]

For every budget and selector of the study's main arm (test cells), the per-seed paired
difference in accuracy on the same test items (selector minus random at the same seed), its t
interval over seeds, the exact sign-flip p-value, Holm's adjustment across the selectors of that
budget, and the smallest difference this many seeds detect (80% power).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from s2l_pipeline.core.evaluation.stats import holm, per_seed_difference, unpack_correct

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "benchmarks" / "results" / "data_efficiency_learns.jsonl"
BASELINE = "random"


def main_cells(path: Path) -> list[dict]:
    """The test cells of the main arm of the embedded mixture."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        r
        for r in rows
        if r["cell"]["judge"] == "test"
        and r["cell"]["variant"] == "main"
        and r["cell"]["mixture"] == "embedded"
    ]


def correct_matrix(cells: list[dict], seeds: list[int], domain: str) -> np.ndarray:
    """[seeds, items]: the 1/0 of every test item of ``domain`` (sets in name order)."""
    by_seed = {c["cell"]["seed"]: c for c in cells}
    out = []
    for seed in seeds:
        bits = by_seed[seed]["correct"]
        names = sorted(k for k in bits if k.startswith(domain + "/"))
        out.append(np.concatenate([unpack_correct(bits[k]) for k in names]))
    return np.asarray(out, dtype=np.float64)


def comparisons(cells: list[dict], domain: str) -> list[dict]:
    """One row per (budget, selector): its per-seed difference from random, Holm per budget."""
    groups: dict[tuple[float, str], list[dict]] = defaultdict(list)
    for c in cells:
        groups[(c["cell"]["budget"], c["cell"]["method"])].append(c)
    rows = []
    for budget in sorted({b for b, m in groups if m == BASELINE}):
        base = groups[(budget, BASELINE)]
        found = {}
        for (b, method), arm in sorted(groups.items()):
            if b != budget or method == BASELINE:
                continue
            seeds = sorted({c["cell"]["seed"] for c in arm} & {c["cell"]["seed"] for c in base})
            if len(seeds) < 2:
                continue
            found[method] = per_seed_difference(
                correct_matrix(arm, seeds, domain), correct_matrix(base, seeds, domain)
            )
        adjusted = holm({m: d.p_sign_flip for m, d in found.items()})
        for method, d in found.items():
            rows.append(
                {"budget": budget, "method": method, "holm_p": adjusted[method], **d.to_dict()}
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="?", type=Path, default=DEFAULT)
    p.add_argument("--domain", default="in_domain")
    args = p.parse_args(argv)
    cells = main_cells(args.results)
    rows = comparisons(cells, args.domain)
    print(f"{args.results.name}: {args.domain} accuracy, selector minus {BASELINE}, by seed")
    print("| budget | selector | difference (points) | t 95% interval | sign-flip p | Holm p "
          "| detectable (80%) | seeds |")  # fmt: skip
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['budget']:.0%} | {r['method']} | {100 * r['difference']:+.2f} | "
            f"[{100 * r['low']:+.1f}, {100 * r['high']:+.1f}] | {r['p_sign_flip']:.4f} | "
            f"{r['holm_p']:.3f} | {100 * r['minimum_detectable']:.1f} | {r['seeds']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
