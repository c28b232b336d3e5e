"""Content hashes: stable example ids and table versions that survive re-runs and re-orderings."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import polars as pl

_SEP = "\x1f"
_NULL = "\x00"


def example_id(prompt: str, response: str) -> str:
    """16 hex chars of sha256 over prompt and response: same text, same id, on any machine."""
    digest = hashlib.sha256(f"{prompt}{_SEP}{response}".encode()).hexdigest()
    return digest[:16]


def example_ids(prompts: Iterable[str], responses: Iterable[str]) -> list[str]:
    return [example_id(p, r) for p, r in zip(prompts, responses, strict=True)]


def table_hash(df: pl.DataFrame) -> str:
    """sha256 of the table's logical content (column names, order, values), not its Parquet bytes.

    Parquet bytes change with the writer's version and compression; this does not.
    """
    h = hashlib.sha256()
    h.update(_SEP.join(f"{n}:{t}" for n, t in df.schema.items()).encode())
    if df.height and df.width:
        rows = df.select(
            pl.concat_str(
                [pl.col(c).cast(pl.String).fill_null(_NULL) for c in df.columns],
                separator=_SEP,
            )
        ).to_series()
        for start in range(0, rows.len(), 100_000):
            h.update(("\n".join(rows.slice(start, 100_000).to_list()) + "\n").encode())
    return h.hexdigest()


def file_hash(path: str | Path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()
