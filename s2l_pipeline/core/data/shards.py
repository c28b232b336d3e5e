"""Data arriving as shards in a folder or S3 prefix: discovery, validation, the sensor's cursor.

A shard is one JSONL/JSON/Parquet file. Its partition key is its path under the shard root
(made safe for Dagster); its version is the sha256 of its bytes, so a file rewritten with new
content is a new version of the same partition, and one merely touched is not.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

import polars as pl

from ..support import storage
from ..support.hashing import file_hash, table_hash
from .formats import UnknownSchemaError
from .ingest import (
    DatasetSpec,
    FileSource,
    LoadedDataset,
    TooManyRejected,
    check_rejections,
    load_dataset,
)
from .readers import SUFFIXES, FileReadError


def shard_key(uri: str, root: str) -> str:
    """The partition key of a shard: its path under ``root``, '/' -> '__', odd chars -> '_'."""
    rel = uri[len(root.rstrip("/")) :].lstrip("/") if uri.startswith(root.rstrip("/")) else uri
    return re.sub(r"[^A-Za-z0-9._-]", "_", rel.replace("/", "__"))


def list_shards(root: str, endpoint_url: str | None = None) -> dict[str, str]:
    """Partition key -> uri of every data file under ``root`` (empty if the folder is absent)."""
    if not storage.is_s3(root) and not storage.Path(root).expanduser().is_dir():
        return {}
    prefix = root if not storage.is_s3(root) else root.rstrip("/") + "/"
    uris = [u for u in storage.list_uris(prefix, endpoint_url) if u.lower().endswith(SUFFIXES)]
    return {shard_key(u, root): u for u in uris}


def shard_version(uri: str, endpoint_url: str | None = None) -> str:
    return file_hash(storage.fetch(uri, endpoint_url))


def load_shard(
    uri: str, endpoint_url: str | None = None, max_rejected_share: float = 0.01
) -> LoadedDataset:
    """Read one shard with the dataset loader; raises ShardRejected with the reason."""
    spec = DatasetSpec(
        embedded=None, files=(FileSource(uri),), max_rejected_share=max_rejected_share
    )
    try:
        loaded = load_dataset(spec, endpoint_url)
        check_rejections(loaded, max_rejected_share)
    except (FileReadError, UnknownSchemaError, TooManyRejected) as exc:
        raise ShardRejected(str(exc)) from exc
    if loaded.train.is_empty():
        raise ShardRejected(f"{uri}: no valid rows ({loaded.rejected.height} rejected)")
    return loaded


class ShardRejected(ValueError):
    """A shard that cannot join the pool; the message names the file and the reason."""


@dataclass
class ShardCursor:
    """What the sensor has seen: key -> version handled, and key -> reason for rejected ones.

    Stored as the sensor's cursor (JSON). A version is recorded only after its run request
    is emitted, and the run key is derived from it, so a repeated tick never requests twice.
    """

    versions: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> ShardCursor:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(raw.get("versions", {}), raw.get("rejected", {}))

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def inventory_version(versions: dict[str, str]) -> str:
    """One version for the whole set of accepted shards: changes when any shard comes or goes."""
    import hashlib

    text = json.dumps(sorted(versions.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def run_key(key: str, version: str) -> str:
    """Dagster skips a run request whose run_key it has seen: one run per shard version."""
    return f"shard:{key}:{version[:16]}"


def union_tables(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Rows of every part in order; an example_id seen before is dropped (first one wins)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        raise ValueError("no tables to combine")
    return pl.concat(parts, how="vertical_relaxed").unique(
        "example_id", keep="first", maintain_order=True
    )


def new_rows(rows: pl.DataFrame, known_ids: pl.Series) -> pl.DataFrame:
    """Rows whose example_id is not in ``known_ids`` (already scored elsewhere)."""
    return rows.filter(~pl.col("example_id").is_in(known_ids.implode()))


def retrain_due(trained_rows: int, pool_rows: int, share: float) -> tuple[bool, str]:
    """Retrain the proxy when rows it never saw reach ``share`` of the pool."""
    unseen = max(pool_rows - trained_rows, 0)
    frac = unseen / pool_rows if pool_rows else 0.0
    verdict = "due" if frac >= share and unseen > 0 else "not due"
    return (
        verdict == "due",
        f"{unseen} of {pool_rows} rows unseen ({frac:.1%}; policy {share:.0%}): {verdict}",
    )


def training_rows(
    base: pl.DataFrame, base_hash: str, shards: dict[str, tuple[pl.DataFrame, str]]
) -> tuple[pl.DataFrame, str, dict]:
    """What the proxy trains on: the base table plus every shard (first seen wins).

    ``shards`` maps a shard key to (rows, content hash). Returns (rows, data hash, trained_on);
    with no shard the data hash is the base table's own, so a proxy is not retrained for nothing.
    """
    train = union_tables([base, *(rows for rows, _ in shards.values())])
    data_hash = table_hash(train) if shards else base_hash
    trained_on = {
        "raw_dataset": base_hash,
        "shards": {key: digest for key, (_, digest) in shards.items()},
        "rows": train.height,
    }
    return train, data_hash, trained_on
