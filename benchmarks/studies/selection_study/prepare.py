"""The published selection study's data and pretrained base, for `s2l study --spec`.

    python benchmarks/studies/selection_study/prepare.py [--out DIR] [--check]

Writes, beside the specs (or under --out): data/test.parquet, data/test_in_domain.parquet,
data/validation.parquet, data/pool_balanced.parquet, data/pool_imbalanced.parquet (one draw per
family, deduplicated by problem, split at random into test, validation and pool; the imbalanced
pool holds the families at 10/20/70) and base/ (the target pretrained once on families disjoint
from the study's: every study cell fine-tunes from it). Both are what the committed records
were made from: their table hashes and the base's checkpoint sha256 are checked against
benchmarks/results/selection_study.meta.json (--check fails on any difference).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import polars as pl

from s2l_pipeline.core.data.generator import (
    OOD_FAMILIES,
    TRAIN_FAMILIES,
    allocate,
    as_eval_rows,
    draw_distinct,
    families_with_settings,
    generate_mixture,
    generate_ood,
    table_problem_keys,
)
from s2l_pipeline.core.data.schema import EVAL_SCHEMA
from s2l_pipeline.core.lm.fit import ModelSpec, TrainRun
from s2l_pipeline.core.lm.train_config import CheckpointSchedule, TrainConfig
from s2l_pipeline.core.stages.models import TrainingRows, fit_target
from s2l_pipeline.core.support.hashing import table_hash
from s2l_pipeline.core.support.storage import ArtifactStore

HERE = Path(__file__).resolve().parent
META = HERE.parents[1] / "results" / "selection_study.meta.json"

# The committed study's draw (benchmarks/results/selection_study.meta.json, "scale").
FAMILIES = ("gcd", "simple_equations", "chain_sum")
# Wider than the mixture's so each family has enough distinct problems for one draw.
FAMILY_SETTINGS = (("gcd", "max_value", 90), ("simple_equations", "max_value", 30),
                   ("chain_sum", "max_terms", 2))  # fmt: skip
DRAW_SEED = 22
TEST_PER_FAMILY, VAL_PER_FAMILY, POOL_SIZE, OOD_PER_FAMILY = 300, 100, 6000, 100
POOLS = {"balanced": (1.0, 1.0, 1.0), "imbalanced": (0.1, 0.2, 0.7)}
# The base's families: the mixture's others, less basic_arithmetic and decimal_chain_sum,
# whose sums pose chain_sum's problems (two thirds of its test problems, by problem key).
PRETRAIN_FAMILIES = ("products", "lcm", "leg_counting", "fraction_simplification",
                     "base_conversion", "count_bits", "spell_backward")  # fmt: skip
PRETRAIN_SIZE, PRETRAIN_EPOCHS, PRETRAIN_LR = 16_000, 3.0, 2e-3
BASE_SIZE, BATCH_SIZE, MAX_LENGTH = "target", 64, 96


def prepare_data(folder: Path) -> dict[str, Path]:
    """The test, validation and pool tables from one draw per family (kept when present)."""
    names = ["test", "validation", *(f"pool_{p}" for p in POOLS)]
    paths = {n: folder / f"{n}.parquet" for n in names}
    if all(p.exists() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    counts = {name: allocate(POOL_SIZE, list(shares)) for name, shares in POOLS.items()}
    tests, vals, pools = [], [], {p: [] for p in POOLS}
    for i, family in enumerate(families_with_settings(FAMILIES, FAMILY_SETTINGS)):
        most = max(c[i] for c in counts.values())
        drawn = draw_distinct(family, TEST_PER_FAMILY + VAL_PER_FAMILY + most, DRAW_SEED)
        shuffled = drawn.sample(fraction=1.0, shuffle=True, seed=DRAW_SEED + i)
        tests.append(shuffled[:TEST_PER_FAMILY])
        vals.append(shuffled[TEST_PER_FAMILY : TEST_PER_FAMILY + VAL_PER_FAMILY])
        reserve = shuffled[TEST_PER_FAMILY + VAL_PER_FAMILY :]
        for name, c in counts.items():
            pools[name].append(reserve[: c[i]])
    test = as_eval_rows(pl.concat(tests), "in_domain")
    ood = generate_ood(OOD_PER_FAMILY, DRAW_SEED).cast(EVAL_SCHEMA)
    pl.concat([test, ood]).write_parquet(paths["test"])
    as_eval_rows(pl.concat(vals), "in_domain").write_parquet(paths["validation"])
    for name, parts in pools.items():
        pl.concat(parts).write_parquet(paths[f"pool_{name}"])
    return paths


def pretrained_base(paths: dict[str, Path], out: Path) -> dict:
    """The base pretrained once on disjoint families (none of its problems is a study
    problem), saved as a model folder; its record is kept beside it."""
    record_path = out / "base.json"
    if record_path.exists() and (out / "base").exists():
        return json.loads(record_path.read_text())
    t0 = time.perf_counter()
    cols = ["source", "prompt", "metadata"]
    study_keys = frozenset(
        table_problem_keys(pl.concat([pl.read_parquet(p, columns=cols) for p in paths.values()]))
    )
    clash = set(PRETRAIN_FAMILIES) & (set(FAMILIES) | {f.name for f in OOD_FAMILIES})
    if clash:
        raise SystemExit(f"pretraining families {sorted(clash)} are the study's or OOD sets")
    families = tuple(f for f in TRAIN_FAMILIES if f.name in PRETRAIN_FAMILIES)
    corpus, _ = generate_mixture(PRETRAIN_SIZE, 0, 0, families, exclude=study_keys,
                                 keep_metadata=True)  # fmt: skip
    shared = table_problem_keys(corpus) & study_keys
    if shared:  # the exclusion above makes this impossible; a check that can fail
        raise SystemExit(f"{len(shared)} pretraining problems are study problems")
    run = TrainRun(
        model=ModelSpec("embedded", BASE_SIZE, 512, 0),
        train=TrainConfig(
            epochs=PRETRAIN_EPOCHS,
            learning_rate=PRETRAIN_LR,
            batch_size=BATCH_SIZE,
            max_length=MAX_LENGTH,
        ),  # fmt: skip
        schedule=CheckpointSchedule(count=1),
    )
    store = ArtifactStore(str(out / "work" / "artifacts"))
    trained = fit_target(TrainingRows(corpus, table_hash(corpus)), run, store, out / "work")
    if (out / "base").exists():
        shutil.rmtree(out / "base")
    shutil.copytree(store.fetch_dir(trained.final.uri), out / "base")
    record = {
        "families": [f.name for f in families],
        "rows": corpus.height,
        "train_steps": trained.final.step,
        "n_parameters": trained.n_parameters,
        "checkpoint_sha256": trained.final.sha256,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    record_path.write_text(json.dumps(record, indent=1))
    return record


def in_domain_test(paths: dict[str, Path]) -> Path:
    """The test rows the study judges (the out-of-domain sets were a secondary read)."""
    path = paths["test"].with_name("test_in_domain.parquet")
    pl.read_parquet(paths["test"]).filter(pl.col("domain") == "in_domain").write_parquet(path)
    return path


def differences(paths: dict[str, Path], base: dict) -> list[str]:
    """What differs from the data and base the committed records were made from."""
    made = json.loads(META.read_text())["made_from"]
    out = []
    for name, path in sorted(paths.items()):
        got = table_hash(pl.read_parquet(path))
        if got != made["data"][name]:
            out.append(f"{name}: table hash {got[:12]}, committed {made['data'][name][:12]}")
    if base["checkpoint_sha256"] != made["base_sha256"]:
        out.append(f"base: sha256 {base['checkpoint_sha256'][:12]}, committed "
                   f"{made['base_sha256'][:12]}")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=HERE, help="where data/ and base/ go")
    p.add_argument("--check", action="store_true", help="fail unless they are the committed")
    args = p.parse_args(argv)
    paths = prepare_data(args.out / "data")
    base = pretrained_base(paths, args.out)
    in_domain_test(paths)
    diff = differences(paths, base)
    print(json.dumps({"data": {k: str(v) for k, v in paths.items()}, "base": base,
                      "same_as_committed": not diff, "differences": diff}, indent=1))  # fmt: skip
    return 1 if diff and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
