"""How sure is a difference in accuracy between two selectors? By seed: the seed is the unit
of replication (it fixes the selection's draw and the target's initialisation), so each seed
gives one paired difference, and the interval, the test and the smallest detectable difference
come from those few numbers (t with seeds - 1 degrees of freedom, an exact sign-flip test, Holm
across selectors). A paired bootstrap over test items and seeds is a second view.

Two methods are compared on the same test items and the same seeds, so the comparison is
paired: what a seed or an item shares between the methods cancels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

EXACT_SIGN_FLIP_SEEDS = 20  # up to 2^20 sign patterns enumerated; beyond, a seeded sample


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


@dataclass(frozen=True)
class SeedDifference:
    """mean(a) - mean(b) read seed by seed: the mean of the per-seed differences, its t
    interval (seeds - 1 degrees of freedom), the exact sign-flip p-value, the per-seed SD and
    the smallest difference this many seeds detect (two-sided ``alpha``, ``power``)."""

    difference: float
    low: float
    high: float
    p_sign_flip: float
    seed_sd: float
    minimum_detectable: float
    seeds: int
    per_seed: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def per_seed_difference(
    a: np.ndarray, b: np.ndarray, level: float = 0.95, power: float = 0.8
) -> SeedDifference:
    """``a``, ``b``: [seeds, items] scores of two methods on the same items and seeds (or
    [seeds] of per-seed scores). Needs at least two seeds."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need one shape, got {a.shape} and {b.shape}")
    d = (a - b).reshape(a.shape[0], -1).mean(axis=1)
    n = len(d)
    if n < 2:
        raise ValueError(f"a per-seed interval needs at least 2 seeds, got {n}")
    sd = float(d.std(ddof=1))
    t = stats.t(df=n - 1)
    half = float(t.ppf(1 - (1 - level) / 2)) * sd / np.sqrt(n)
    detectable = (float(t.ppf(1 - (1 - level) / 2)) + float(t.ppf(power))) * sd / np.sqrt(n)
    mean = float(d.mean())
    return SeedDifference(
        difference=mean,
        low=mean - half,
        high=mean + half,
        p_sign_flip=sign_flip_p(d),
        seed_sd=sd,
        minimum_detectable=detectable,
        seeds=n,
        per_seed=tuple(float(x) for x in d),
    )


def sign_flip_p(d: np.ndarray, seed: int = 0, samples: int = 1 << 20) -> float:
    """Two-sided p of mean(d) = 0 against every sign pattern of ``d`` (the paired permutation
    test): exact up to EXACT_SIGN_FLIP_SEEDS values, else over ``samples`` seeded patterns.
    With n seeds it cannot go below 2 / 2^n (0.0625 at 5 seeds)."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n == 0:
        return 1.0
    observed = abs(d.sum())
    if n <= EXACT_SIGN_FLIP_SEEDS:
        patterns = ((np.arange(1 << n)[:, None] >> np.arange(n)) & 1) * 2 - 1
    else:
        patterns = np.random.default_rng(seed).choice([-1, 1], size=(samples, n))
    sums = np.abs(patterns @ d)
    return float(np.mean(sums >= observed - 1e-12))


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment across comparisons (selectors against one baseline): the
    family-wise error stays at the level; adjusted values never decrease along the order."""
    order = sorted(p_values, key=lambda k: (p_values[k], k))
    m, running, out = len(order), 0.0, {}
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[key]))
        out[key] = running
    return {k: out[k] for k in p_values}


def pack_correct(values) -> str:
    """Per-item 1/0 as a compact string ('0110...'), to keep with a result record."""
    return "".join("1" if v else "0" for v in values)


def unpack_correct(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")
