"""How sure is a difference in accuracy between two selectors? Paired bootstrap over test items
and seeds, and the smallest difference a design of this size can detect.

Two methods are compared on the same test items and the same seeds (a seed fixes the
selection's draw and the target's initialisation), so the comparison is paired: resampling
keeps an item's (or a seed's) results together, and what is shared cancels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """mean(a) - mean(b) with a percentile bootstrap interval, its standard error, and the
    minimum detectable difference (two-sided ``alpha``, ``power``) at this many items/seeds."""

    difference: float
    low: float
    high: float
    standard_error: float
    minimum_detectable: float
    items: int
    seeds: int
    resamples: int

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    power: float = 0.8,
) -> PairedDifference:
    """``a``, ``b``: [seeds, items] scores (1/0 correctness, or any per-item metric) of two
    methods on the same items and seeds. Each resample draws seeds and items with
    replacement, the same draw for both methods."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, float))
    if a.shape != b.shape:
        raise ValueError(f"paired scores need one shape, got {a.shape} and {b.shape}")
    n_seeds, n_items = a.shape
    diff = a - b  # per seed and item
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for k in range(resamples):
        s = rng.integers(0, n_seeds, n_seeds)
        i = rng.integers(0, n_items, n_items)
        stats[k] = diff[np.ix_(s, i)].mean()
    tail = (1 - level) / 2
    se = float(stats.std(ddof=1))
    z = NormalDist().inv_cdf(1 - tail) + NormalDist().inv_cdf(power)
    return PairedDifference(
        difference=float(diff.mean()),
        low=float(np.quantile(stats, tail)),
        high=float(np.quantile(stats, 1 - tail)),
        standard_error=se,
        minimum_detectable=z * se,
        items=n_items,
        seeds=n_seeds,
        resamples=resamples,
    )


def pack_correct(values) -> str:
    """Per-item 1/0 as a compact string ('0110...'), to keep with a result record."""
    return "".join("1" if v else "0" for v in values)


def unpack_correct(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")
