"""The subset taken away: the selected rows as the user's original records, with lineage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..export import subset_records, write_export
from ..support.storage import ArtifactStore
from ..support.tables import read_table
from .manifests import (
    PoolManifest,
    RawDatasetManifest,
    ShardManifest,
    SubsetManifest,
    read_manifest,
)


@dataclass(frozen=True)
class Exported:
    out: Path
    format: str
    rows: int
    files: dict[str, str]  # path under ``out`` -> sha256


def export_subset(store: ArtifactStore, fmt: str, out: Path | None = None) -> Exported:
    """Write the latest selected subset in ``fmt`` under ``out`` (default: by its hash)."""
    subset = read_manifest(store, SubsetManifest, "selected_subset")
    pool = read_manifest(store, PoolManifest, "training_pool")
    raw = read_manifest(store, RawDatasetManifest, "raw_dataset")
    if subset is None or pool is None or raw is None:
        raise ValueError(f"{store.root}: no selected subset here; run `s2l run` first")
    if raw.origins is None:
        raise ValueError(
            f"{store.root}: raw_dataset predates recorded origins; run `s2l run` again"
        )
    origins = [read_table(raw.origins, store)]
    for key in pool.shards:
        shard = read_manifest(store, ShardManifest, "data_shard", key)
        if shard is not None and shard.origins is not None:
            origins.append(read_table(shard.origins, store))
    rows = subset_records(read_table(subset.subset, store), pl.concat(origins))
    out = out or Path("data") / "export" / subset.subset.content_hash[:16]
    about = {
        "subset": subset.subset.uri,
        "subset_content_hash": subset.subset.content_hash,
        "method": subset.method,
        "budget": subset.budget,
        "seed": subset.seed,
        "lineage": subset.lineage,
    }
    written = write_export(rows, fmt, out, about)
    return Exported(out, fmt, rows.height, written["files"])
