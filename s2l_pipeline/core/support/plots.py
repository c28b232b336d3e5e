"""Small PNG plots for asset metadata and MLflow (matplotlib, no display needed)."""

from __future__ import annotations

import base64
import io

import polars as pl


def _figure(size: tuple[float, float]):
    """A headless matplotlib figure (the Agg backend needs no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def _png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def loss_curve_png(summary: pl.DataFrame, title: str = "Response loss per checkpoint") -> bytes:
    """Mean loss per checkpoint with the 10-90 percentile band and the median."""
    fig, ax = _figure((6, 3.5))
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
    return _png(fig)


def training_loss_png(history: list, title: str = "Training loss") -> bytes:
    """The Trainer's logged loss against the optimizer step."""
    fig, ax = _figure((6, 3.5))
    ax.plot([h[0] for h in history], [h[1] for h in history], "-", marker=".")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (response tokens)")
    ax.set_title(title)
    return _png(fig)


def markdown_image(png: bytes, alt: str = "plot") -> str:
    """Inline a PNG in Markdown metadata (the Dagster UI renders data URIs)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def cluster_trajectories_png(
    steps: list[int], centroids: list[list[float]], sizes: list[int]
) -> bytes:
    """Each cluster's mean trajectory (its centroid), line width by cluster size."""
    fig, ax = _figure((6, 3.5))
    biggest = max(sizes) if sizes else 1
    for c, n in zip(centroids, sizes, strict=True):
        ax.plot(steps, c, lw=0.4 + 2.0 * n / biggest, alpha=0.6)
    ax.set_xlabel("training step")
    ax.set_ylabel("cluster mean loss")
    ax.set_title(f"Mean loss trajectory of each of {len(sizes)} clusters")
    return _png(fig)


def histogram_png(values: list[int], xlabel: str, title: str) -> bytes:
    fig, ax = _figure((6, 3))
    ax.hist(values, bins=min(40, max(5, len(values) // 3)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    return _png(fig)


def compare_bars_png(
    labels: list[str], full: list[float], subset: list[float], title: str
) -> bytes:
    """Share of each group in the full set and in the subset, side by side."""
    import numpy as np

    fig, ax = _figure((max(6, 0.35 * len(labels)), 3.5))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, full, 0.4, label="full set")
    ax.bar(x + 0.2, subset, 0.4, label="subset")
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    ax.set_title(title)
    ax.legend()
    return _png(fig)
