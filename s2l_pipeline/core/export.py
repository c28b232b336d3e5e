"""The selected subset taken away: the user's own records, in the format they train with, with a
manifest that says what chose them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from .support.hashing import file_hash

EXPORT_FORMATS = ("jsonl", "parquet", "hf")


class ExportError(ValueError):
    """The subset cannot be written as asked (unknown format, rows without their origin)."""


def subset_records(subset: pl.DataFrame, origins: pl.DataFrame) -> pl.DataFrame:
    """The subset's rows with their file, line and original record, in the subset's order."""
    rows = subset.select("example_id", "source").join(
        origins.unique("example_id", keep="first"),
        on="example_id",
        how="left",
        maintain_order="left",
    )
    missing = rows.filter(pl.col("record").is_null())
    if missing.height:
        raise ExportError(
            f"{missing.height} of {rows.height} selected rows have no recorded origin (first: "
            f"example_id {missing['example_id'][0]}); materialize raw_dataset again to record it"
        )
    return rows


def write_export(rows: pl.DataFrame, fmt: str, out: Path, manifest: dict) -> dict:
    """Write the records as ``fmt`` under ``out`` plus manifest.json; returns the manifest."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    records = rows["record"].to_list()
    if fmt == "jsonl":
        path = out / "subset.jsonl"
        path.write_text("".join(r + "\n" for r in records), encoding="utf-8")
        written = [path]
    elif fmt == "parquet":
        path = out / "subset.parquet"
        as_table(records).write_parquet(path)
        written = [path]
    else:
        import datasets

        folder = out / "hf"
        datasets.Dataset.from_list([json.loads(r) for r in records]).save_to_disk(str(folder))
        written = sorted(p for p in folder.rglob("*") if p.is_file())
    full = {
        **manifest,
        "format": fmt,
        "rows": rows.height,
        "rows_per_file": dict(sorted(rows.group_by("file").len().iter_rows())),
        "files": {str(p.relative_to(out)): file_hash(p) for p in written},
    }
    (out / "manifest.json").write_text(json.dumps(full, indent=1, sort_keys=True) + "\n")
    return full


def as_table(records: list[str]) -> pl.DataFrame:
    """Records (JSON) as one table; records of several schemas are refused with the reason."""
    try:
        return pl.from_dicts([json.loads(r) for r in records], infer_schema_length=None)
    except Exception as exc:  # polars raises several error types for clashing schemas
        raise ExportError(
            f"the selected records do not fit one table ({exc}); export them as jsonl"
        ) from exc
