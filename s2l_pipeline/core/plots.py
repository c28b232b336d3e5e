"""Small PNG plots for asset metadata and MLflow (matplotlib, no display needed)."""

from __future__ import annotations

import base64
import io

import polars as pl


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def loss_curve_png(summary: pl.DataFrame, title: str = "Response loss per checkpoint") -> bytes:
    """Mean loss per checkpoint with the 10-90 percentile band and the median."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = summary["step"].to_list()
    ax.fill_between(
        steps, summary["p10"].to_list(), summary["p90"].to_list(), alpha=0.25, label="p10-p90"
    )
    ax.plot(steps, summary["p50"].to_list(), "--", label="median")
    ax.plot(steps, summary["mean"].to_list(), "o-", label="mean")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean CE over response tokens")
    ax.set_title(title)
    ax.legend()
    data = _png(fig)
    plt.close(fig)
    return data


def markdown_image(png: bytes, alt: str = "plot") -> str:
    """Inline a PNG in Markdown metadata (the Dagster UI renders data URIs)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
