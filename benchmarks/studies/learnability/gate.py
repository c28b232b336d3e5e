"""The learnability gate (issue 37 item 1): which reasoning-gym families can the study target
learn at all, before any selection study is run on them.

    python benchmarks/studies/selection_study/prepare.py    # the pretrained base (once)
    python benchmarks/studies/learnability/gate.py prepare  # data/ and specs/ per family
    python benchmarks/studies/learnability/gate.py run [--jobs 2] [--families a,b]
    python benchmarks/studies/learnability/gate.py save     # an interrupted sitting's records
    python benchmarks/studies/learnability/gate.py table    # results/gate.md, results/gate.json

Each candidate family (none of them one the base was pretrained on) gets its own pool and
validation set and its own spec: `random` at 5%, 10% and 30% and full data, 3 seeds each, run by
`s2l study --spec` in a folder of its own. The gate reads the product's reports: a family
passes when random at 10% is at least 10 points above the answer-prior baseline (every row
answered with the pool's commonest answer: the report's floor) and full data at least 10 points
above random at 10%. Judged on validation only: choosing families is a choice, and the study's
test split must not have seen it. The cells' records (with their predictions) are kept under
results/records/ and put back before a family runs: a sitting on a fresh machine resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(HERE.parent / "selection_study"))

from convert import s2l_study  # noqa: E402  (the published study's way of running a spec)
from prepare import PRETRAIN_FAMILIES  # noqa: E402

from s2l_pipeline.core.data.generator import (  # noqa: E402
    as_eval_rows,
    draw_distinct,
    families_with_settings,
)

# Every family of the generator the base was not pretrained on.
CANDIDATES = ("gcd", "simple_equations", "chain_sum", "basic_arithmetic", "decimal_chain_sum",
              "prime_factorization", "letter_counting", "count_primes",
              "calendar_arithmetic")  # fmt: skip
# The published study's widenings, and enough distinct problems for prime_factorization's draw.
SETTINGS = (("gcd", "max_value", 90), ("simple_equations", "max_value", 30),
            ("chain_sum", "max_terms", 2), ("prime_factorization", "max_value", 1500))  # fmt: skip
POOL, VALIDATION, SEED = 1000, 100, 37
BUDGETS, SEEDS = (0.05, 0.1, 0.3), 3
# One recipe for every family (the study's own tuning comes after the gate): the published
# study's batch and lengths, its chosen learning rate, and 30 epochs.
TARGET = {"model": "../../selection_study/base", "learning_rate": 0.002, "epochs": 30.0,
          "batch_size": 32, "max_length": 96, "num_checkpoints": 1, "max_new_tokens": 12,
          "eval_batch_size": 256, "eval_max_length": 96, "threads": 1}  # fmt: skip
PROXY = {"size": "proxy", "epochs": 1.0, "batch_size": 64, "max_length": 96, "num_checkpoints": 2}
ABOVE_PRIOR, FULL_ABOVE = 0.10, 0.10


def prepare() -> None:
    """Per family: a pool and a validation set from one draw of distinct problems, and its spec."""
    clash = set(CANDIDATES) & set(PRETRAIN_FAMILIES)
    if clash:
        raise SystemExit(f"{sorted(clash)}: the base was pretrained on them")
    (HERE / "specs").mkdir(exist_ok=True)
    for family in families_with_settings(CANDIDATES, SETTINGS):
        folder = HERE / "data" / family.name
        folder.mkdir(parents=True, exist_ok=True)
        drawn = draw_distinct(family, VALIDATION + POOL, SEED)
        drawn = drawn.sample(fraction=1.0, shuffle=True, seed=SEED)
        as_eval_rows(drawn[:VALIDATION], "in_domain").write_parquet(folder / "validation.parquet")
        drawn[VALIDATION:].write_parquet(folder / "pool.parquet")
        spec = {
            "data": {"files": [{"path": f"../data/{family.name}/pool.parquet"}]},
            "split": {"validation_files": [{"path": f"../data/{family.name}/validation.parquet"}]},
            "proxy": PROXY,
            "target": TARGET,
            "arms": {"random": {"method": "random"}},
            "budgets": list(BUDGETS),
            "seeds": SEEDS,
            "full_seeds": SEEDS,
            "endpoint": "score",
            "comparisons": [["random", "full"]],
            "epsilon": 1.0,
        }
        head = f"# Learnability gate, {family.name} ({family.kwargs}): written by gate.py prepare\n"
        (HERE / "specs" / f"{family.name}.yaml").write_text(head + yaml.safe_dump(spec))
        print(f"{family.name}: pool {POOL}, validation {VALIDATION}", flush=True)


def home(family: str, root: Path) -> Path:
    return root / family


def records(family: str) -> Path:
    return HERE / "results" / "records" / family


def save(family: str, root: Path) -> None:
    """The family's finished cell records (and predictions), committed after each sitting."""
    cells = home(family, root) / "art" / "study_cells"
    if cells.exists():
        shutil.rmtree(records(family), ignore_errors=True)
        shutil.copytree(cells, records(family), ignore=shutil.ignore_patterns("training_ids"))


def run(families: list[str], root: Path, jobs: int) -> None:
    """`s2l study --spec` per family, ``jobs`` at a time, each on one thread; a family's
    committed records are put where the study finds them first, so no finished cell reruns."""
    os.environ["OMP_NUM_THREADS"] = "1"

    def one(family: str) -> None:
        if records(family).exists():
            shutil.copytree(records(family), home(family, root) / "art" / "study_cells",
                            dirs_exist_ok=True)  # fmt: skip
        summary = s2l_study(HERE / "specs" / f"{family}.yaml", home(family, root))
        save(family, root)
        print(f"{family}: {summary['cells_run']} run, {summary['cells_reused']} reused, "
              f"{summary['cells_seconds']:.0f} s", flush=True)  # fmt: skip

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, families))


def family_row(family: str, root: Path) -> dict:
    """The gate's figures for one family, from the product's report (scores in points)."""
    summary = s2l_study(HERE / "specs" / f"{family}.yaml", home(family, root))
    if summary["cells_run"]:
        raise SystemExit(f"{family}: {summary['cells_run']} cells were not finished (run first)")
    body = json.loads(Path(summary["report_json"]).read_text())
    by = {}
    for c in body["cells"]:
        by.setdefault((c["method"], c["budget"]), []).append(100 * c["score"])
    prior = 100 * body["floor"]
    answers = pl.read_parquet(HERE / "data" / family / "validation.parquet")["answer"]
    best_constant = 100 * answers.value_counts()["count"].max() / answers.len()
    row = {"family": family, "prior": prior, "best_constant": best_constant,
           "study_id": summary["study_id"],
           "report": str(Path(summary["report"]).relative_to(root))}  # fmt: skip
    for (method, budget), scores in sorted(by.items()):
        key = "full" if method == "full" else f"random@{budget:g}"
        row[key] = {"mean": float(np.mean(scores)), "sd": float(np.std(scores, ddof=1)),
                    "seeds": len(scores)}  # fmt: skip
    r10, full = row["random@0.1"]["mean"], row["full"]["mean"]
    row["passes"] = r10 - prior >= 100 * ABOVE_PRIOR and full - r10 >= 100 * FULL_ABOVE
    # The same rule against the judge's own commonest answer: no constant does better.
    row["passes_strict"] = row["passes"] and r10 - best_constant >= 100 * ABOVE_PRIOR
    save(family, root)
    return row


def table(families: list[str], root: Path) -> str:
    rows = [family_row(f, root) for f in families]
    cols = [f"random@{b:g}" for b in BUDGETS] + ["full"]
    lines = ["| family | answer prior | best constant | " + " | ".join(cols)
             + " | passes | against the best constant |",
             "|---|---:|---:|" + "---:|" * len(cols) + "---|---|"]  # fmt: skip
    for r in rows:
        cells = [f"{r[c]['mean']:.1f} ± {r[c]['sd']:.1f}" for c in cols]
        lines.append(f"| {r['family']} | {r['prior']:.1f} | {r['best_constant']:.1f} | "
                     + " | ".join(cells) + f" | {'yes' if r['passes'] else 'no'} | "
                     + f"{'yes' if r['passes_strict'] else 'no'} |")  # fmt: skip
    passed = [r["family"] for r in rows if r["passes"]]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "gate.json").write_text(json.dumps(rows, indent=1))
    text = "\n".join(lines) + f"\n\nPassed ({len(passed)}): {', '.join(passed) or 'none'}.\n"
    (out / "gate.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=["prepare", "run", "save", "table"])
    p.add_argument("--families", default=",".join(CANDIDATES))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--home", type=Path, default=ROOT / "data" / "benchmarks" / "learnability")
    args = p.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    if args.step == "prepare":
        prepare()
    elif args.step == "run":
        run(families, args.home, args.jobs)
    elif args.step == "save":
        for family in families:
            save(family, args.home)
    else:
        print(table(families, args.home))
    return 0


if __name__ == "__main__":
    sys.exit(main())
