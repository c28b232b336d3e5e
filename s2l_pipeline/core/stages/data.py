"""Data stages: every input as one clean training table, the evaluation sets, one new shard.

Rejected rows are written before any threshold is checked, so a refused input still leaves
its rows, with their reasons, where the error says.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ..data.eval_sets import EvalFile, build_eval_sets
from ..data.ingest import (
    DatasetSpec,
    LoadedDataset,
    TooManyRejected,
    check_rejections,
    load_dataset,
)
from ..data.shards import load_shard, shard_version
from ..support.hashing import table_hash
from ..support.storage import ArtifactStore
from ..support.tables import TableRef, read_table, write_rejected, write_table
from .manifests import EvalSetsManifest, RawDatasetManifest, ShardManifest


class RejectedTooMany(TooManyRejected):
    """Too many rows rejected; the rejected rows are stored at ``rejected.uri``."""

    def __init__(self, message: str, loaded: LoadedDataset, rejected: TableRef):
        super().__init__(message)
        self.loaded, self.rejected = loaded, rejected


@dataclass(frozen=True)
class RawDataset:
    manifest: RawDatasetManifest
    loaded: LoadedDataset  # the tables as read, for summaries
    duplicates: TableRef | None  # with duplicates='drop': the dropped copies


def make_raw_dataset(spec: DatasetSpec, store: ArtifactStore) -> RawDataset:
    """Read every input of ``spec``; raises RejectedTooMany past its rejected share."""
    loaded = load_dataset(spec, store.endpoint_url)
    version = table_hash(loaded.train)
    prefix = f"raw_dataset/{version[:16]}"
    rejected = write_rejected(loaded.rejected, store, "raw_dataset")
    try:
        check_rejections(loaded, spec.max_rejected_share, rejected.uri)
    except TooManyRejected as exc:
        raise RejectedTooMany(str(exc), loaded, rejected) from exc
    manifest = RawDatasetManifest(
        train=write_table(loaded.train, store, f"{prefix}/train.parquet", version),
        heldout=write_table(loaded.heldout, store, f"{prefix}/heldout.parquet"),
        rejected=rejected,
        embedded=spec.embedded is not None,
        origins=write_table(loaded.origins, store, f"{prefix}/origins.parquet"),
    )
    duplicates = None
    if loaded.duplicates is not None:
        duplicates = write_rejected(loaded.duplicates, store, "raw_dataset/duplicates")
    return RawDataset(manifest, loaded, duplicates)


@dataclass(frozen=True)
class EvalSetsOptions:
    ood_per_family: int = 300  # problems per out-of-domain reasoning-gym family (0: none)
    out_of_domain: bool | None = None  # None: only when the embedded training data is on
    seed: int = 0
    files: tuple[EvalFile, ...] = ()
    max_rejected_share: float = DatasetSpec.max_rejected_share


NO_EVAL_SETS = (
    "no evaluation set: give an evaluation file (s2l run --eval FILE, or eval_sets files:), "
    "carve held-out rows from your data (raw_dataset heldout_per_source: 200), or add the "
    "embedded out-of-domain families (eval_sets out_of_domain: true)"
)


@dataclass(frozen=True)
class EvalSets:
    manifest: EvalSetsManifest
    table: pl.DataFrame
    rejected: pl.DataFrame
    out_of_domain: bool


def make_eval_sets(
    raw: RawDatasetManifest, opts: EvalSetsOptions, store: ArtifactStore
) -> EvalSets:
    """In-domain held-out rows, out-of-domain families and test files, as one table."""
    with_ood = raw.embedded if opts.out_of_domain is None else opts.out_of_domain
    table, rejected = build_eval_sets(
        read_table(raw.heldout, store),
        opts.ood_per_family if with_ood else 0,
        opts.seed,
        opts.files,
        store.endpoint_url,
        opts.max_rejected_share,
    )
    if table.is_empty():
        raise ValueError(NO_EVAL_SETS)
    version = table_hash(table)
    manifest = EvalSetsManifest(
        eval=write_table(table, store, f"eval_sets/{version[:16]}/eval.parquet", version),
        rejected=write_rejected(rejected, store, "eval_sets"),
    )
    return EvalSets(manifest, table, rejected, with_ood)


@dataclass(frozen=True)
class Shard:
    manifest: ShardManifest
    loaded: LoadedDataset


def make_shard(
    key: str, uri: str, endpoint_url: str | None, max_rejected_share: float, store: ArtifactStore
) -> Shard:
    """One shard read and checked like raw_dataset; raises ShardRejected with the reason."""
    loaded = load_shard(uri, endpoint_url, max_rejected_share)
    version = table_hash(loaded.train)
    prefix = f"data_shard/{version[:16]}"
    manifest = ShardManifest(
        train=write_table(loaded.train, store, f"{prefix}/train.parquet", version),
        rejected=write_rejected(loaded.rejected, store, "data_shard"),
        origins=write_table(loaded.origins, store, f"{prefix}/origins.parquet"),
        uri=uri,
        file_sha256=shard_version(uri, endpoint_url),
        shard=key,
    )
    return Shard(manifest, loaded)
