"""What re-selection costs when 10% new data arrives, against re-running the pipeline.

    python benchmarks/refresh_cost.py [--size 20000] [--new-share 0.1] [--out DIR]

1. Materialize the graph up to selected_subset on the embedded mixture (not timed).
2. Refresh: drop a shard of new rows (a tenth of them duplicates of rows already in the pool)
   into the shard folder; one shard_sensor tick registers it; the run it requests ingests and
   scores the shard with the existing proxy; then declarative automation is evaluated and the
   assets it requests (pool, clusters, subset) are materialized. Timed end to end.
3. Full re-run: the same graph with the new rows part of raw_dataset (proxy retrained, every
   row rescored, clusters, subset). Timed end to end.
Both run in this process on the same machine, one after the other; prints wall times, rows
scored (examples x checkpoints) and their ratios.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import dagster as dg
import polars as pl

from s2l_pipeline.core.data.generator import generate_mixture
from s2l_pipeline.definitions import ASSETS
from s2l_pipeline.defs.automation import RetrainPolicy
from s2l_pipeline.defs.data import data_shard
from s2l_pipeline.defs.profiles import run_config
from s2l_pipeline.defs.resources import (
    ArtifactStoreResource,
    ManifestIOManager,
    MlflowTracking,
    ShardSourceResource,
)
from s2l_pipeline.defs.sensors import shard_sensor
from s2l_pipeline.defs.trajectories import shard_trajectories

SELECTION = [
    "raw_dataset",
    "proxy_checkpoints",
    "loss_trajectories",
    "training_pool",
    "trajectory_clusters",
    "selected_subset",
]


def resources(root: Path) -> dict:
    store = ArtifactStoreResource(root=str(root / "art"), work_dir=str(root / "work"))
    return {
        "artifact_store": store,
        "io_manager": ManifestIOManager(artifact_store=store),
        "mlflow": MlflowTracking(tracking_uri=f"sqlite:///{root / 'mlflow.db'}"),
        "shard_source": ShardSourceResource(root=str(root / "shards")),
        "retrain_policy": RetrainPolicy(),
    }


def config(size: int, files: list[dict] | None = None, assets: list[str] = SELECTION) -> dict:
    overrides = {"raw_dataset": {"embedded": {"size": size, "heldout_per_family": 50}}}
    if files:  # the shard repeats some pool rows on purpose: duplicates are rejected, counted
        overrides["raw_dataset"].update(files=files, max_rejected_share=0.05)
    return run_config("default", overrides, assets=assets)


def materialize(
    names: list[str], res: dict, instance, cfg: dict, **kw
) -> dg.ExecuteInProcessResult:
    picked = [a for a in ASSETS if a.key.path[0] in names]
    result = dg.materialize(
        ASSETS, selection=picked, resources=res, instance=instance, run_config=cfg, **kw
    )
    if not result.success:
        raise RuntimeError(f"materializing {names} failed")
    return result


def meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [mat] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mat.metadata.items()}


def write_shard(path: Path, rows: pl.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in rows.iter_rows(named=True):
            f.write(
                json.dumps(
                    {"instruction": r["prompt"], "output": r["response"], "source": r["source"]}
                )
                + "\n"
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=20_000)
    p.add_argument("--new-share", type=float, default=0.1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="refresh_cost_"))
    (root / "dagster").mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.local_temp(str(root / "dagster"))
    res = resources(root)

    t0 = time.perf_counter()
    base = materialize(SELECTION, res, instance, config(args.size))
    t_base = time.perf_counter() - t0
    n_ckpt = meta(base, "proxy_checkpoints")["num_checkpoints"]
    base_rows = pl.read_parquet(meta(base, "raw_dataset")["train_path"])
    print(
        f"base pipeline: {base_rows.height} rows, {n_ckpt} checkpoints, {t_base:.1f} s", flush=True
    )

    n_new = round(args.new_share * base_rows.height)
    # reasoning-gym builds item i from Random(seed + i): a far seed gives rows not in the base.
    fresh = generate_mixture(n_new - n_new // 10, seed=10_000_000, heldout_per_family=0)[0]
    shard = pl.concat([fresh, base_rows.sample(n_new // 10, seed=0)])
    shard_path = root / "shards" / "refresh.jsonl"
    write_shard(shard_path, shard)

    # --- refresh: sensor tick -> shard run -> automation -> what it requests
    t0 = time.perf_counter()
    with dg.build_sensor_context(
        instance=instance,
        resources={"shard_source": res["shard_source"], "artifact_store": res["artifact_store"]},
    ) as ctx:
        tick = shard_sensor(ctx)
    for req in tick.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    for event in tick.asset_events:
        instance.report_runless_asset_event(event)
    defs = dg.Definitions(assets=ASSETS, resources=res)
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    [request] = tick.run_requests
    shard_run = dg.materialize(
        ASSETS,
        selection=[data_shard, shard_trajectories],
        partition_key=request.partition_key,
        resources=res,
        instance=instance,
    )
    auto = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    requested = [
        k.path[0]
        for k in defs.resolve_asset_graph().get_all_asset_keys()
        if auto.get_num_requested(k)
    ]
    materialize(requested, res, instance, config(args.size, assets=requested))
    t_refresh = time.perf_counter() - t0
    scored = meta(shard_run, "shard_trajectories")
    refresh_rows = scored["rows_scored"] * n_ckpt
    print(f"refresh: requested by automation {requested}; {t_refresh:.1f} s", flush=True)

    # --- full re-run with the new rows in raw_dataset
    t0 = time.perf_counter()
    full = materialize(SELECTION, res, instance, config(args.size, [{"path": str(shard_path)}]))
    t_full = time.perf_counter() - t0
    pool_rows = meta(full, "training_pool")["dagster/row_count"]
    full_rows = pool_rows * meta(full, "proxy_checkpoints")["num_checkpoints"]

    figures = {
        "base_rows": base_rows.height,
        "shard_rows": shard.height,
        "shard_rows_already_in_pool": int(shard.height - scored["rows_scored"]),
        "checkpoints": n_ckpt,
        "refresh_seconds": round(t_refresh, 1),
        "full_rerun_seconds": round(t_full, 1),
        "time_ratio": round(t_refresh / t_full, 3),
        "refresh_rows_scored": refresh_rows,
        "full_rerun_rows_scored": full_rows,
        "scored_ratio": round(refresh_rows / full_rows, 3),
        "automation_requested": requested,
    }
    print(json.dumps(figures, indent=1))
    print(
        f"\n| path | wall s | rows scored (examples x checkpoints) |\n|---|---|---|\n"
        f"| refresh (10% new) | {t_refresh:.1f} | {refresh_rows} |\n"
        f"| full re-run | {t_full:.1f} | {full_rows} |\n"
        f"| ratio | {t_refresh / t_full:.3f} | {refresh_rows / full_rows:.3f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
