"""Summaries of a dataset table for materialization metadata and reports."""

from __future__ import annotations

import polars as pl

# Before a tokenizer exists we count pre-tokens the way our byte-level BPE splits text: one per
# digit, one per run of letters, one per other non-space character. It tracks BPE lengths on
# this data closely enough to size max_length and spot outliers.
_PRETOKEN = r"\d|[^\W\d_]+|[^\w\s]|_"


def approx_tokens(col: str) -> pl.Expr:
    return pl.col(col).str.count_matches(_PRETOKEN).alias(f"{col}_tokens")


def source_counts(df: pl.DataFrame) -> pl.DataFrame:
    """Rows and share per source, largest first."""
    total = max(df.height, 1)
    return (
        df.group_by("source")
        .len("rows")
        .with_columns(share=(pl.col("rows") / total).round(4))
        .sort(["rows", "source"], descending=[True, False])
    )


def length_summary(df: pl.DataFrame) -> pl.DataFrame:
    """Percentiles of approximate token lengths of prompt, response and both together."""
    lens = df.select(approx_tokens("prompt"), approx_tokens("response")).with_columns(
        total_tokens=pl.col("prompt_tokens") + pl.col("response_tokens")
    )
    rows = []
    for col in lens.columns:
        s = lens[col]
        rows.append(
            {
                "field": col,
                "mean": round(float(s.mean() or 0), 1),
                "p50": int(s.quantile(0.5) or 0),
                "p90": int(s.quantile(0.9) or 0),
                "p99": int(s.quantile(0.99) or 0),
                "max": int(s.max() or 0),
            }
        )
    return pl.DataFrame(rows)


def rejection_counts(rejected: pl.DataFrame) -> pl.DataFrame:
    """Rejected rows per reason category (the reason up to its first colon or parenthesis)."""
    return (
        rejected.with_columns(category=pl.col("reason").str.extract(r"^([^:(]+)").str.strip_chars())
        .group_by("category")
        .len("rows")
        .sort(["rows", "category"], descending=[True, False])
    )


def markdown_table(df: pl.DataFrame, max_rows: int = 50) -> str:
    """A small DataFrame as a Markdown table (the Dagster UI renders Markdown metadata)."""
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * df.width + "\n"
    body = "".join(
        "| "
        + " | ".join(
            "" if v is None else str(v).replace("|", "\\|").replace("\n", " ") for v in row
        )
        + " |\n"
        for row in df.head(max_rows).iter_rows()
    )
    more = f"\n_{df.height - max_rows} more rows not shown_\n" if df.height > max_rows else ""
    return head + body + more
