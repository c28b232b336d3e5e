"""How a subset compares with the full set, per group (source, cluster)."""

from __future__ import annotations

import polars as pl


def compare_counts(full: pl.DataFrame, subset: pl.DataFrame, by: str) -> pl.DataFrame:
    """Rows and shares of each ``by`` value in the full set and in the subset."""
    f = full.group_by(by).len("full_rows")
    s = subset.group_by(by).len("subset_rows")
    out = f.join(s, on=by, how="left").with_columns(pl.col("subset_rows").fill_null(0))
    return out.with_columns(
        full_share=(pl.col("full_rows") / max(full.height, 1)).round(4),
        subset_share=(pl.col("subset_rows") / max(subset.height, 1)).round(4),
        kept=(pl.col("subset_rows") / pl.col("full_rows")).round(4),
    ).sort(by)
