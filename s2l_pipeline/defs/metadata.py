"""Helpers that turn core summaries into Dagster metadata values."""

from __future__ import annotations

import dagster as dg
import polars as pl

from ..core.data.stats import markdown_table
from ..core.lm.fit import TrainedModel, TrainRun
from ..core.lm.order import OrderReport
from ..core.support.plots import markdown_image, training_loss_png
from ..core.support.tables import TableRef


def md(df: pl.DataFrame, max_rows: int = 50) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(df, max_rows))


# The asset page's metadata value column shows about 36 characters of monospace text at a
# 1400-pixel-wide window and clips the rest (Markdown wraps at a wider, fixed width): sentences
# are broken by hand to fit (screenshots in the browser test).
VALUE_COLUMN_CHARS = 34


def sentences(lines: list[str], width: int = VALUE_COLUMN_CHARS) -> dg.MetadataValue:
    """Sentences as Markdown paragraphs with hard line breaks every ``width`` characters, so a
    long recommendation reads whole on the asset page instead of running past its edge."""
    import textwrap

    return dg.MetadataValue.md(
        "\n\n".join("  \n".join(textwrap.wrap(s, width)) for s in lines if s.strip())
    )


def preview(df: pl.DataFrame, rows: int = 5, width: int = 120) -> dg.MetadataValue:
    """First rows with long strings cut, so the UI stays readable."""
    short = df.head(rows).with_columns(
        pl.col(c).str.slice(0, width) for c, t in df.schema.items() if t == pl.String
    )
    return md(short, rows)


def training_loss_plot(history: list, title: str) -> dict[str, dg.MetadataValue]:
    """The training loss curve as an image on the asset's page (nothing when not trained)."""
    if not history:
        return {}
    png = training_loss_png(history, title)
    return {
        "training_loss": dg.MetadataValue.md(markdown_image(png, "training loss")),
        "final_training_loss": dg.MetadataValue.float(float(history[-1][1])),
    }


def table_ref_metadata(name: str, ref: TableRef) -> dict[str, dg.MetadataValue]:
    return {
        f"{name}_path": dg.MetadataValue.path(ref.uri),
        f"{name}_rows": dg.MetadataValue.int(ref.rows),
        f"{name}_content_hash": dg.MetadataValue.text(ref.content_hash),
    }


def training_order_metadata(order: OrderReport | None) -> dict[str, dg.MetadataValue]:
    """How the model's first epoch was ordered, beside a uniform shuffle of the same rows."""
    if order is None:
        return {}
    return {
        "training_order": dg.MetadataValue.text(order.order),
        "longest_single_source_run": dg.MetadataValue.int(order.longest_single_source_run),
        "longest_single_source_run_shuffle": dg.MetadataValue.int(
            order.longest_single_source_run_shuffle
        ),
        "padding_share": dg.MetadataValue.float(order.padding_share),
    }


def run_params(run: TrainRun, n_examples: int) -> dict:
    """A training run's settings as MLflow params."""
    return {
        **run.train.to_dict(),
        "model": run.model.name,
        "size": run.model.size,
        "lora_r": run.lora_r,
        "n_examples": n_examples,
    }


def model_metadata(m: TrainedModel) -> dict[str, dg.MetadataValue]:
    """What every trained model shows: its checkpoints, size, data and order."""
    table = "| step | uri | sha256 |\n|---|---|---|\n" + "".join(
        f"| {c.step} | {c.uri} | {c.sha256[:16]} |\n" for c in m.checkpoints
    )
    return {
        "checkpoints": dg.MetadataValue.md(table),
        "num_checkpoints": len(m.checkpoints),
        "n_parameters": m.n_parameters,
        "n_examples": m.n_examples,
        "n_truncated": m.n_truncated,
        "train_tokens": m.train_tokens,
        "final_checkpoint": dg.MetadataValue.path(m.final.uri),
        "checkpoint_sha256": m.final.sha256,
        "train_config": dg.MetadataValue.json(m.train.to_dict()),
        **training_order_metadata(m.order),
    }
