"""Data arriving in shards: one dynamic partition per shard file, scored incrementally with the
existing proxy, and the training pool (base dataset + every scored shard) that selection reads.
"""

import os

import dagster as dg
import polars as pl
from pydantic import Field

from ..core.data.shards import (
    ShardCursor,
    ShardRejected,
    inventory_version,
    list_shards,
    load_shard,
    shard_version,
    union_tables,
)
from ..core.data.stats import rejection_counts, source_counts
from ..core.support.hashing import table_hash
from ..core.support.tables import TableRef, read_table, write_rejected, write_table
from ..core.trajectories import incremental_trajectories, score_rows
from .automation import REFRESH
from .metadata import md, table_ref_metadata
from .resources import ArtifactStoreResource, read_manifest

SHARDS = dg.DynamicPartitionsDefinition(name="data_shards")


def default_shard_root() -> str:
    return os.environ.get("S2L_SHARD_ROOT", os.path.join("data", "shards"))


class ShardSourceResource(dg.ConfigurableResource):
    """The folder or s3:// prefix new data lands in, one JSONL/JSON/Parquet file per shard."""

    root: str = Field(default_factory=default_shard_root)
    endpoint_url: str | None = None
    max_rejected_share: float = Field(
        0.01, description="A shard with more rejected rows than this share is refused whole."
    )

    def uri_of(self, key: str) -> str:
        shards = list_shards(self.root, self.endpoint_url)
        if key not in shards:
            raise dg.Failure(f"shard {key!r} is no longer under {self.root}", allow_retries=False)
        return shards[key]


@dg.observable_source_asset(
    group_name="data",
    required_resource_keys={"shard_source"},
    description="The set of shards accepted under the shard root. shard_sensor records a new "
    "version whenever a shard comes or changes, so the pool and all below it show as stale.",
)
def shard_inventory(context) -> dg.DataVersion:
    # Observed from the UI (or by the sensor): every listed shard counts; the sensor's own
    # observations count only the shards it accepted.
    src = context.resources.shard_source
    listing = list_shards(src.root, src.endpoint_url)
    return dg.DataVersion(
        inventory_version({k: shard_version(u, src.endpoint_url) for k, u in listing.items()})
    )


def inventory_observation(cursor: ShardCursor) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=shard_inventory.key,
        tags={"dagster/data_version": inventory_version(cursor.versions)},
        metadata={"shards": len(cursor.versions), "refused": len(cursor.rejected)},
    )


@dg.asset(
    group_name="data",
    kinds={"polars", "parquet"},
    code_version="1",
    partitions_def=SHARDS,
    description="One shard of new data, read and checked like raw_dataset (rejected rows kept "
    "with their reason). Partitions are registered by shard_sensor.",
)
def data_shard(
    context: dg.AssetExecutionContext,
    shard_source: ShardSourceResource,
    artifact_store: ArtifactStoreResource,
) -> dg.Output[dict]:
    store = artifact_store.store()
    uri = shard_source.uri_of(context.partition_key)
    try:
        loaded = load_shard(uri, shard_source.endpoint_url, shard_source.max_rejected_share)
    except ShardRejected as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    version = table_hash(loaded.train)
    train = write_table(loaded.train, store, f"data_shard/{version[:16]}/train.parquet", version)
    rejected = write_rejected(loaded.rejected, store, "data_shard")
    manifest = {
        "train": train.to_dict(),
        "rejected": rejected.to_dict(),
        "uri": uri,
        "file_sha256": shard_version(uri, shard_source.endpoint_url),
        "shard": context.partition_key,
    }
    return dg.Output(
        manifest,
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": train.rows,
            "content_hash": version,
            "source_uri": dg.MetadataValue.path(uri),
            "file_sha256": manifest["file_sha256"],
            "rows_per_source": md(source_counts(loaded.train)),
            "rejected_rows": rejected.rows,
            "rejected_by_reason": md(rejection_counts(loaded.rejected)),
            **table_ref_metadata("train", train),
        },
    )


@dg.asset(
    group_name="proxy",
    kinds={"pytorch", "parquet"},
    code_version="1",
    partitions_def=SHARDS,
    automation_condition=REFRESH,
    description="Loss trajectories of one shard at the existing proxy checkpoints; rows already "
    "scored with this proxy (in the base table or an earlier run) are reused, not rescored.",
)
def shard_trajectories(
    context: dg.AssetExecutionContext,
    data_shard: dict,
    proxy_checkpoints: dict,
    loss_trajectories: dict,
    artifact_store: ArtifactStoreResource,
) -> dg.Output[dict]:
    store = artifact_store.store()
    rows = read_table(TableRef.from_dict(data_shard["train"]), store)
    proxy_fp = proxy_checkpoints["fingerprint"]
    key = f"shard_trajectories/{proxy_fp}/{data_shard['train']['content_hash'][:16]}.parquet"
    known = []
    if store.exists(key):  # this shard's content was scored with this proxy before
        known.append(read_table(store.uri(key), store))
    if loss_trajectories.get("proxy_fingerprint") == proxy_fp:
        base = read_table(TableRef.from_dict(loss_trajectories["trajectories"]), store)
        known.append(base.join(rows.select("example_id"), on="example_id", how="semi"))
    max_length = proxy_checkpoints["train"]["max_length"]
    table, n_scored, n_reused = incremental_trajectories(
        rows,
        pl.concat(known, how="vertical_relaxed").unique("example_id") if known else None,
        lambda todo: score_rows(todo, proxy_checkpoints["checkpoints"], store, max_length),
    )
    ref = write_table(table, store, key, table_hash(table))
    context.log.info(f"{context.partition_key}: scored {n_scored} rows, reused {n_reused}")
    return dg.Output(
        {
            "trajectories": ref.to_dict(),
            "train": data_shard["train"],
            "shard": context.partition_key,
            "proxy_fingerprint": proxy_fp,
        },
        data_version=dg.DataVersion(ref.content_hash),
        metadata={
            "dagster/row_count": table.height,
            "rows_scored": n_scored,
            "rows_reused": n_reused,
            "proxy_fingerprint": proxy_fp,
            "trajectories_path": dg.MetadataValue.path(ref.uri),
        },
    )


def _materialized(instance: dg.DagsterInstance, asset: str) -> list[str]:
    registered = set(instance.get_dynamic_partitions(SHARDS.name))
    return sorted(registered & set(instance.get_materialized_partitions(dg.AssetKey(asset))))


def materialized_shards(instance: dg.DagsterInstance) -> list[str]:
    """Registered shards whose rows are materialized, in key order."""
    return _materialized(instance, "data_shard")


def scored_shards(instance: dg.DagsterInstance) -> list[str]:
    """Registered shards whose trajectories are materialized, in key order."""
    return _materialized(instance, "shard_trajectories")


@dg.asset(
    group_name="selection",
    kinds={"polars", "parquet"},
    code_version="1",
    deps=[shard_trajectories, shard_inventory],
    automation_condition=REFRESH,
    description="What selection chooses from: raw_dataset plus every scored shard (rows and "
    "trajectories), duplicates dropped; shards scored with an older proxy wait.",
)
def training_pool(
    context: dg.AssetExecutionContext,
    raw_dataset: dict,
    loss_trajectories: dict,
    proxy_checkpoints: dict,
    artifact_store: ArtifactStoreResource,
) -> dg.Output[dict]:
    store = artifact_store.store()
    proxy_fp = proxy_checkpoints["fingerprint"]
    trains = [read_table(TableRef.from_dict(raw_dataset["train"]), store)]
    trajs = [read_table(TableRef.from_dict(loss_trajectories["trajectories"]), store)]
    shards, waiting = {}, []
    for key in scored_shards(context.instance):
        m = read_manifest(store, "shard_trajectories", key)
        if m is None or m["proxy_fingerprint"] != proxy_fp:
            waiting.append(key)  # scored with another proxy: rescored by automation first
            continue
        trains.append(read_table(TableRef.from_dict(m["train"]), store))
        trajs.append(read_table(TableRef.from_dict(m["trajectories"]), store))
        shards[key] = m["train"]["content_hash"]
    train = union_tables(trains)
    traj = union_tables(trajs).join(train.select("example_id"), on="example_id", how="semi")
    version = table_hash(train)
    train_ref = write_table(train, store, f"training_pool/{version[:16]}/train.parquet", version)
    traj_ref = write_table(
        traj, store, f"training_pool/{version[:16]}/trajectories.parquet", table_hash(traj)
    )
    if waiting:
        context.log.warning(f"left out until rescored with the current proxy: {waiting}")
    lineage = {
        "raw_dataset": raw_dataset["train"]["content_hash"],
        "shards": shards,
        "pool": version,
        "trajectories": traj_ref.content_hash,
        "proxy_fingerprint": proxy_fp,
    }
    n_base = trains[0].height
    context.log.info(f"pool: {train.height} rows ({n_base} base + {len(shards)} shards)")
    return dg.Output(
        {
            "train": train_ref.to_dict(),
            "trajectories": traj_ref.to_dict(),
            "shards": shards,
            "lineage": lineage,
        },
        data_version=dg.DataVersion(version[:32] + traj_ref.content_hash[:32]),
        metadata={
            "dagster/row_count": train.height,
            "base_rows": n_base,
            "shard_rows": train.height - n_base,
            "n_shards": len(shards),
            "shards": dg.MetadataValue.json(shards),
            "shards_waiting_for_rescoring": dg.MetadataValue.json(waiting),
            "lineage": dg.MetadataValue.json(lineage),
            **table_ref_metadata("train", train_ref),
            **table_ref_metadata("trajectories", traj_ref),
        },
    )
