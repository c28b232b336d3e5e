"""Looking for a regime where the target learns (issue 15, part 2): full data against a random
10%, same recipe, on a chosen set of easy reasoning-gym families.

    .venv/bin/python benchmarks/regime_search.py --families basic_arithmetic,chain_sum,... \
        --size 12000 --target target --epochs 20 [--heldout 300]

Prints mean in-domain exact match (each family weighs the same) and per family, for the full
set and a random 10% subset trained with the same epochs (so a tenth of the compute), and the
seconds each took. Families use the difficulty of the embedded mixture
(s2l_pipeline/core/data/generator.py); weights are equal.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl

from s2l_pipeline.core.data.generator import FAMILIES_BY_NAME, Family, generate_mixture
from s2l_pipeline.core.lm.fit import ModelSpec, TrainRun
from s2l_pipeline.core.lm.train_config import CheckpointSchedule, TrainConfig
from s2l_pipeline.core.stages.models import EvalOptions, TrainingRows, evaluate_model, fit_target
from s2l_pipeline.core.support.hashing import table_hash
from s2l_pipeline.core.support.storage import ArtifactStore

# Easier settings measured in ../shared/DESIGN.md ("Family configs that worked"), as changes
# to the mixture's own (generator.py); --easy applies them.
EASY = {
    "basic_arithmetic": {"max_digits": 1},
    "chain_sum": {"max_terms": 2},
    "simple_equations": {},
    "gcd": {"max_value": 50},
    "leg_counting": {"max_animals": 1},
    "fraction_simplification": {"max_value": 20},
}


def train_and_score(
    rows: pl.DataFrame, test: pl.DataFrame, args, work: Path, tokenizer_dir: Path | None
) -> tuple[pl.DataFrame, float, Path]:
    store = ArtifactStore(str(work / "artifacts"))
    run = TrainRun(
        model=ModelSpec("embedded", args.target, seed=0),
        train=TrainConfig(
            epochs=args.epochs, learning_rate=args.lr, batch_size=64, max_length=96, seed=0
        ),
        schedule=CheckpointSchedule(count=1),
    )
    t0 = time.perf_counter()
    trained = fit_target(
        TrainingRows(rows, table_hash(rows)), run, store, work / "work", None, tokenizer_dir
    )
    uri = trained.final.uri
    opts = EvalOptions(max_new_tokens=12, max_length=96, batch_size=256)
    _, metrics = evaluate_model(uri, test, opts, store)
    return metrics, time.perf_counter() - t0, store.fetch_dir(uri)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", required=True, help="comma-separated family names")
    p.add_argument("--size", type=int, default=12_000)
    p.add_argument("--heldout", type=int, default=300)
    p.add_argument("--target", default="target")
    p.add_argument("--epochs", type=float, default=20.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--easy", action="store_true", help="DESIGN.md's easier family settings")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FAMILY.KEY=JSON",
        help="change one family setting, e.g. chain_sum.max_terms=2 (repeatable)",
    )
    args = p.parse_args()
    names = args.families.split(",")
    easy = EASY if args.easy else {}
    kwargs = {n: {**FAMILIES_BY_NAME[n].kwargs, **easy.get(n, {})} for n in names}
    for item in args.set:
        target, _, value = item.partition("=")
        name, _, key = target.partition(".")
        kwargs[name][key] = json.loads(value)
    families = tuple(Family(n, 1.0, kwargs[n]) for n in names)
    train, test = generate_mixture(args.size, 0, args.heldout, families)
    work = Path(tempfile.mkdtemp(prefix="s2l-regime-"))
    full, t_full, full_dir = train_and_score(train, test, args, work / "full", None)
    sample = train.sample(fraction=0.1, seed=0, shuffle=True)
    ten, t_ten, _ = train_and_score(sample, test, args, work / "random10", full_dir)
    table = full.select("eval_set", pl.col("accuracy").alias("full")).join(
        ten.select("eval_set", pl.col("accuracy").alias("random_10pct")), on="eval_set"
    )
    print(f"{len(names)} families{' (easy)' if args.easy else ''}, {train.height} rows, "
          f"{args.heldout} test problems each, "
          f"target {args.target}, {args.epochs:g} epochs, lr {args.lr:g}")  # fmt: skip
    print(f"settings: {json.dumps(kwargs)}")
    for r in table.iter_rows(named=True):
        print(
            f"  {r['eval_set']:26s} full {100 * r['full']:5.1f}%"
            f"   10% {100 * r['random_10pct']:5.1f}%"
        )
    print(
        f"mean in-domain exact match: full {100 * float(table['full'].mean()):.1f}% "
        f"({t_full:.0f} s), random 10% {100 * float(table['random_10pct'].mean()):.1f}% "
        f"({t_ten:.0f} s)"
    )


if __name__ == "__main__":
    main()
