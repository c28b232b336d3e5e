"""Parquet tables in the artifact store, each described by a small reference with its hash."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import polars as pl

from .hashing import table_hash
from .storage import ArtifactStore


@dataclass(frozen=True)
class TableRef:
    """What downstream steps need to find and trust a table: where, how many rows, which content."""

    uri: str
    rows: int
    content_hash: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TableRef:
        return cls(uri=d["uri"], rows=int(d["rows"]), content_hash=d["content_hash"])


def write_table(
    df: pl.DataFrame, store: ArtifactStore, key: str, content_hash: str | None = None
) -> TableRef:
    """Write ``df`` as zstd Parquet at ``key``; pass ``content_hash`` if already computed."""
    with store.writing(key) as path:
        df.write_parquet(path, compression="zstd", statistics=True, row_group_size=64_000)
    return TableRef(store.uri(key), df.height, content_hash or table_hash(df))


def read_table(
    ref: TableRef | str, store: ArtifactStore | None = None, columns: Sequence[str] | None = None
) -> pl.DataFrame:
    """The table; only those of ``columns`` it has, when given (a 1M-row pool's original
    records are not read by a step that needs its answers)."""
    uri = ref.uri if isinstance(ref, TableRef) else ref
    path = store.fetch(uri) if store else ArtifactStore(".").fetch(uri)
    if columns is None:
        return pl.read_parquet(path)
    have = pl.read_parquet_schema(path)
    return pl.read_parquet(path, columns=[c for c in columns if c in have])


def write_rejected(df: pl.DataFrame, store: ArtifactStore, asset: str) -> TableRef:
    """Rejected rows keyed by their own content: two inputs with the same accepted rows never
    share (or overwrite) one rejected file."""
    digest = table_hash(df)
    return write_table(df, store, f"{asset}/rejected/{digest[:16]}.parquet", digest)
