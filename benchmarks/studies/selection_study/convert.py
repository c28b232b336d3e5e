"""The committed study's records as the product's cell records: converted, not rerun.

    python benchmarks/studies/selection_study/convert.py --home DIR [--pools balanced,...]

For each pool, `s2l study --spec <pool>.yaml --plan` prepares the study (proxy, trajectories,
split) in DIR/<pool> and says its id and recipes; every committed record of that pool
(benchmarks/results/selection_study.jsonl) is then written where the product keeps a finished
cell, under the recipe of its learning rate, epochs and judge. `s2l study --spec` in the same
DIR/<pool> then reuses them all and writes the report. What a committed record lacks is left
empty and named: the cell's most-common-answer floor and training ids (its rows were not kept),
its selection's CPU time, its checkpoint and predictions (not kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from s2l_pipeline.core.evaluation.sanity import prediction_modes
from s2l_pipeline.core.stages.study import record_key
from s2l_pipeline.core.study.cells import CellResult
from s2l_pipeline.core.study.report import FULL
from s2l_pipeline.core.study.spec import load_spec
from s2l_pipeline.core.support.storage import ArtifactStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RECORDS = ROOT / "benchmarks" / "results" / "selection_study.jsonl"
SPECS = {"balanced": ("balanced.yaml", "balanced_20.yaml"),
         "imbalanced": ("imbalanced.yaml", "imbalanced_20.yaml")}  # fmt: skip
JUDGE_FILES = {"test": "data/test_in_domain.parquet", "validation": "data/validation.parquet"}


def study_env(home: Path) -> dict:
    """The environment `s2l study` runs in for one pool's studies (its instance and store)."""
    return {**os.environ, "DAGSTER_HOME": str(home), "S2L_ARTIFACT_ROOT": str(home / "art"),
            "S2L_DATA_DIR": str(home / "data"), "S2L_PROFILE": "default"}  # fmt: skip


def s2l_study(spec: Path, home: Path, *extra: str) -> dict:
    """`s2l study --spec` as a user runs it; its JSON summary (the log beside it)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()
    s2l = Path(sys.executable).with_name("s2l")
    done = subprocess.run([str(s2l), "study", "--spec", str(spec), *extra], env=study_env(home),
                          cwd=home, capture_output=True, text=True)  # fmt: skip
    (home / f"{spec.stem}{'-plan' if extra else ''}.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"s2l study --spec {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def recipes_by_setting(plan: dict) -> dict[tuple[float, float, str], str]:
    """(learning rate, epochs, judge) -> the recipe the product files such a cell under."""
    out = {}
    for r in plan["recipes"]:
        s = r["settings"]
        for judge in ("validation", plan["judge"]):
            out[(s["learning_rate"], s["epochs"], judge)] = r[judge]
    return out


def collapsed(record: dict, judge: str, ref_share: dict[str, float]) -> dict:
    """The sets where one prediction covers more than half the rows and more than the
    commonest reference does: the product's rule (sanity.collapsed_sets), from the record's
    commonest prediction per set."""
    out = {}
    for family, top in record["top_prediction_by_set"].items():
        name = f"{judge}:{family}"
        if top["share"] > max(0.5, ref_share.get(name, 0.0)):
            out[name] = [top["prediction"], round(top["share"], 4)]
    return out


def reference_shares(judge: str, folder: Path = HERE) -> tuple[dict[str, float], list[str]]:
    """Each judged set's commonest-reference share, and the sets in the judged file's order."""
    table = pl.read_parquet(folder / JUDGE_FILES[judge]).filter(pl.col("domain") == "in_domain")
    refs = table.select(
        eval_set=pl.lit(f"{judge}:") + pl.col("source"), task="task", answer_type="answer_type",
        prediction="response",
    )  # fmt: skip
    shares = dict(prediction_modes(refs).select("eval_set", "modal_share").iter_rows())
    return shares, table["source"].unique(maintain_order=True).to_list()


def convert(record: dict, study_id: str, recipe: str, arm, numerics: dict,
            folder: Path = HERE) -> CellResult:  # fmt: skip
    """One committed record as the product's cell record (``folder``: where prepare.py put
    data/)."""
    c = record["cell"]
    judge = c["judge"]
    shares, families = reference_shares(judge, folder)
    in_domain = [f for f in families if f"in_domain/{f}" in record["correct"]]
    per_set = {f"{judge}:{f}": record["per_set"][f"{f}.accuracy"] for f in in_domain}
    nlls = [record["per_set"][f"{f}.mean_nll"] for f in in_domain]
    key = f"{c['method']}-{c['budget']:g}-{c['seed']}"
    return CellResult(
        key=key, method=c["method"], budget=c["budget"], seed=c["seed"], study_id=study_id,
        recipe=recipe, rows=record["n_train"], score=sum(per_set.values()) / len(per_set),
        nll=sum(nlls) / len(nlls), metric="accuracy", per_set=per_set, floor=None,
        collapsed=collapsed(record, judge, shares), nested=False, selection_cpu_seconds=0.0,
        train_seconds=record["seconds"]["train"], eval_seconds=record["seconds"]["eval"],
        train_tokens=record["train_tokens"], epochs=c["epochs"],
        target_parameters=record["n_parameters"], selector=arm.method if arm else FULL,
        arm_options=dict(arm.options) if arm else {},
        correct="".join(record["correct"][f"in_domain/{f}"] for f in in_domain), judge=judge,
        off_mode={f"{judge}:{f}": v for f, v in record["off_mode"].items()}, numerics=numerics,
        converted_from=f"{RECORDS.relative_to(ROOT)}: {record['key']}",
    )  # fmt: skip


def convert_pool(pool: str, home: Path) -> int:
    """Write every committed record of the pool into its study's store; how many."""
    spec_path = HERE / SPECS[pool][0]
    spec = load_spec(spec_path)
    plan = s2l_study(spec_path, home, "--plan")
    recipes = recipes_by_setting(plan)
    store = ArtifactStore(plan["artifact_root"])
    numerics = {k: spec.target[k] for k in ("threads", "micro_batch_tokens", "loss_at_labels")}
    n = 0
    for line in RECORDS.open():
        record = json.loads(line)
        c = record["cell"]
        if c["mixture"] != pool:
            continue
        recipe = recipes[(c["lr"], c["epochs"], c["judge"])]
        arm = spec.arm(c["method"]) if c["method"] != FULL else None
        if c["method"] != FULL and arm is None:
            raise SystemExit(f"{record['key']}: arm {c['method']!r} is not in {spec_path.name}")
        cell = convert(record, plan["study_id"], recipe, arm, numerics)
        path = record_key(plan["study_id"], recipe, cell.key, cell.arm_options or None)
        store.write_text(path, json.dumps(dataclasses.asdict(cell), indent=1, sort_keys=True))
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--home", type=Path, default=ROOT / "data" / "benchmarks" / "selection_study")
    p.add_argument("--pools", default=",".join(SPECS))
    args = p.parse_args(argv)
    for pool in [x for x in args.pools.split(",") if x]:
        print(f"{pool}: {convert_pool(pool, args.home / pool)} records converted", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
