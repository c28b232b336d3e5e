"""Does the product's study give the committed study's scores? Cells of the committed records,
rerun by `s2l study --spec` with the same recipe, set against those records item by item.

    python benchmarks/studies/selection_study/compare.py [--arms random,s2l] [--seeds 3]
        [--out DIR]

Per pool, the pool's spec with the learning rate and epochs the committed study chose on
validation (no grid: the recipe fixed), the given arms at 10% and seeds 0..N-1, no full data;
run by `s2l study` in a fresh Dagster instance and artifact store under --out. Each cell is
compared with its committed record: rows trained on, rows per source, every test item's 1/0,
per-family accuracy, and the primary endpoint (off-mode accuracy). Prints a JSON report and
exits 1 when any cell differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RECORDS = ROOT / "benchmarks" / "results" / "selection_study.jsonl"
META = RECORDS.with_name("selection_study.meta.json")
POOLS = ("balanced", "imbalanced")


def comparison_spec(pool: str, arms: list[str], seeds: int, chosen: dict) -> dict:
    """The pool's spec with the committed choice fixed, these arms, seeds, and no full data."""
    spec = yaml.safe_load((HERE / f"{pool}.yaml").read_text())
    spec.pop("tuning")
    spec["target"].update(learning_rate=chosen["lr"], epochs=chosen["epochs"])
    spec["arms"] = {a: spec["arms"][a] for a in arms}
    spec.update(seeds=seeds, full_seeds=0, comparisons=[[a, "random"] for a in arms
                                                        if a != "random"])  # fmt: skip
    for section, key in (("data", "files"), ("split", "validation_files"), ("split", "test_files")):
        spec[section][key] = [{**f, "path": str(HERE / f["path"])} for f in spec[section][key]]
    spec["target"]["model"] = str(HERE / spec["target"]["model"])
    return spec


def run_product(pool: str, spec: dict, out: Path) -> dict:
    """`s2l study --spec` as a user runs it; its JSON summary."""
    home = out / pool
    home.mkdir(parents=True, exist_ok=True)
    path = home / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "DAGSTER_HOME": str(home), "S2L_ARTIFACT_ROOT": str(home / "art"),
           "S2L_DATA_DIR": str(home / "data"), "S2L_PROFILE": "default"}  # fmt: skip
    s2l = Path(sys.executable).with_name("s2l")
    done = subprocess.run([str(s2l), "study", "--spec", str(path)], env=env, cwd=home,
                          capture_output=True, text=True)  # fmt: skip
    (home / "study.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"s2l study failed for {pool} (log {home / 'study.log'}):\n"
                         f"{done.stderr[-3000:]}")  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def product_cells(summary: dict) -> dict[str, dict]:
    """The product's records of the study's reported cells, by key."""
    body = json.loads(Path(summary["report_json"]).read_text())
    return {c["key"]: c for c in body["cells"]}


def per_family(cell: dict) -> dict[str, str]:
    """Each judged family's 1/0 string, in the test file's order."""
    preds = pl.read_parquet(cell["predictions_uri"])
    return {
        name.split(":", 1)[1]: "".join("1" if c else "0" for c in part["correct"])
        for (name,), part in preds.group_by("eval_set", maintain_order=True)
    }


def composition(cell: dict, pool_path: Path) -> dict[str, int]:
    ids = pl.read_parquet(cell["training_ids_uri"])
    pool = pl.read_parquet(pool_path)
    rows = pool.join(ids, on="example_id", how="semi")
    if rows.height != ids.height:  # the product's ids are not the file's: count by prompt
        return {"unmatched_ids": ids.height - rows.height}
    return dict(sorted(rows.group_by("source").len().iter_rows()))


def compare(pool: str, key: str, mine: dict, theirs: dict, pool_path: Path) -> dict:
    """One cell against its committed record: what is the same, and every difference."""
    items = per_family(mine)
    committed_items = {
        k.split("/", 1)[1]: v for k, v in theirs["correct"].items() if k.startswith("in_domain/")
    }
    ours_off = {k.split(":", 1)[1]: v["accuracy"] for k, v in mine["off_mode"].items()}
    theirs_off = {k: v["accuracy"] for k, v in theirs["off_mode"].items()}
    primary = (sum(ours_off.values()) / len(ours_off), sum(theirs_off.values()) / len(theirs_off))
    row = {
        "pool": pool,
        "cell": key,
        "rows": [mine["rows"], theirs["n_train"]],
        "composition": [composition(mine, pool_path), theirs["composition"]],
        "items_equal": {f: items.get(f) == committed_items[f] for f in committed_items},
        "items_differing": {
            f: sum(a != b for a, b in zip(items.get(f, ""), committed_items[f], strict=False))
            for f in committed_items
        },
        "primary": [round(100 * primary[0], 2), round(100 * primary[1], 2)],
        "accuracy": {
            f: [
                round(100 * mine["per_set"][f"test:{f}"], 2),
                round(100 * theirs["per_set"][f"{f}.accuracy"], 2),
            ]
            for f in committed_items
        },  # fmt: skip
    }
    row["same"] = (row["rows"][0] == row["rows"][1] and all(row["items_equal"].values())
                   and row["composition"][0] == row["composition"][1])  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", default="random,s2l")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--pools", default=",".join(POOLS))
    p.add_argument("--out", type=Path, default=ROOT / "data" / "benchmarks" / "study_compare")
    args = p.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    meta = json.loads(META.read_text())
    committed = {json.loads(line)["key"]: json.loads(line) for line in RECORDS.open()}
    rows = []
    for pool in [x for x in args.pools.split(",") if x]:
        chosen = meta["chosen"][pool]
        summary = run_product(pool, comparison_spec(pool, arms, args.seeds, chosen), args.out)
        cells = product_cells(summary)
        for arm in arms:
            for seed in range(args.seeds):
                key = f"{arm}-0.1-{seed}"
                recipe = f"lr{chosen['lr']:g}/e{chosen['epochs']:g}/bs64/test"
                theirs = committed[f"{pool}/study/{arm}/b0.1/s{seed}/proxy->pretrained/{recipe}"]
                rows.append(compare(pool, key, cells[key], theirs,
                                    HERE / "data" / f"pool_{pool}.parquet"))  # fmt: skip
    print(json.dumps({"cells": len(rows), "same": sum(r["same"] for r in rows), "rows": rows},
                     indent=1))  # fmt: skip
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
