"""Group-sequential seeds: look at the comparisons every few seeds, stop what is decided.

A study runs ``min`` seeds per arm, then looks every ``look_every`` seeds up to ``max``. At
each look a comparison (two arms, paired by seed) is decided when its t interval excludes zero
(the arms differ) or lies inside plus or minus epsilon (they are equivalent); an arm that no
open comparison needs gets no more cells. Looking many times at accumulating data inflates the
false-positive rate, so each look spends part of alpha: the Lan-DeMets O'Brien-Fleming-type
function gives little to early looks and most to the last, and every comparison at a look
gets an equal share of that look's part (Bonferroni over the comparisons named, whether open
or not). By the union bound over looks and comparisons the familywise false-positive rate
stays at or below alpha, whatever the correlation between looks; simulation (the test, and
docs/benchmarks.md) shows how far below, and what the looks save against running every arm to
``max`` seeds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

DIFFERS, EQUIVALENT, OPEN = "differs", "equivalent", "open"


@dataclass(frozen=True)
class SeedPolicy:
    """``seeds: {min: 5, max: 30, look_every: 5}`` in a study's spec."""

    min: int = 5
    max: int = 30
    look_every: int = 5

    def __post_init__(self) -> None:
        if self.min < 2:
            raise ValueError(f"seeds: min must be at least 2 (a paired interval), not {self.min}")
        if self.max < self.min or self.look_every < 1:
            raise ValueError(
                f"seeds: need min <= max and look_every >= 1, got min {self.min}, max "
                f"{self.max}, look_every {self.look_every}"
            )

    def looks(self) -> list[int]:
        """Seeds per arm at each look: min, min + look_every, ..., and max last."""
        out = list(range(self.min, self.max + 1, self.look_every))
        return out if out[-1] == self.max else [*out, self.max]


def obrien_fleming_spent(fraction: float, alpha: float) -> float:
    """Two-sided alpha spent by information ``fraction`` (Lan-DeMets, O'Brien-Fleming type)."""
    if fraction <= 0:
        return 0.0
    z = NormalDist().inv_cdf(1 - alpha / 2)
    return min(alpha, 2 - 2 * NormalDist().cdf(z / np.sqrt(min(fraction, 1.0))))


def look_levels(policy: SeedPolicy, alpha: float) -> list[float]:
    """The two-sided alpha each look may spend; they add up to ``alpha``."""
    spent = [obrien_fleming_spent(n / policy.max, alpha) for n in policy.looks()]
    return [b - a for a, b in zip([0.0, *spent[:-1]], spent, strict=True)]


@dataclass(frozen=True)
class Comparison:
    """arm ``a`` minus arm ``b``, seed by seed."""

    a: str
    b: str

    @property
    def name(self) -> str:
        return f"{self.a} - {self.b}"


@dataclass
class Decision:
    comparison: Comparison
    verdict: str = OPEN
    look: int | None = None  # index of the look that decided it
    seeds: int = 0
    difference: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    level: float = 0.0  # the two-sided alpha of the interval it was decided on


@dataclass
class SequentialResult:
    decisions: dict[str, Decision]
    cells: int  # cells run, every arm counted
    fixed_cells: int  # what running every arm to max seeds would cost
    seeds_by_arm: dict[str, int] = field(default_factory=dict)


@functools.cache
def _t_quantile(p: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(p, df))


def _interval(d: np.ndarray, level: float) -> tuple[float, float, float]:
    """Mean of ``d`` and its two-sided t interval at ``1 - level``."""
    n = len(d)
    mean = float(d.mean())
    half = _t_quantile(1 - level / 2, n - 1) * float(d.std(ddof=1)) / np.sqrt(n)
    return mean, mean - half, mean + half


def decide(d: np.ndarray, level: float, epsilon: float) -> tuple[str, float, float, float]:
    """One comparison at one look: DIFFERS when the ``1 - level`` interval excludes zero,
    EQUIVALENT when the ``1 - 2 level`` interval (two one-sided tests) lies inside
    plus or minus ``epsilon``, else OPEN. Seeds that all gave the same difference (a collapsed
    target scores one constant) make no interval: OPEN, whatever the difference."""
    mean, low, high = _interval(d, level)
    if len(d) < 2 or float(np.ptp(d)) <= 1e-9 * max(1.0, float(np.abs(d).max())):
        return OPEN, mean, low, high  # every seed the same difference (up to rounding): none
    if low > 0 or high < 0:
        return DIFFERS, mean, low, high
    _, tost_low, tost_high = _interval(d, 2 * level)
    if -epsilon < tost_low and tost_high < epsilon:
        return EQUIVALENT, mean, low, high
    return OPEN, mean, low, high


class SequentialDesign:
    """The decisions of a study as its looks come in: which arms still need cells, and what
    each look decided. A comparison needing a score not there yet stays open."""

    def __init__(self, comparisons: Sequence[Comparison], policy: SeedPolicy, epsilon: float,
                 alpha: float = 0.05) -> None:  # fmt: skip
        if not comparisons:
            raise ValueError("a sequential study needs at least one comparison")
        self.policy, self.epsilon, self.alpha = policy, epsilon, alpha
        self.levels = look_levels(policy, alpha)
        self.decisions = {c.name: Decision(c) for c in comparisons}

    def open_arms(self) -> set[str]:
        return {arm for d in self.decisions.values() if d.verdict == OPEN
                for arm in (d.comparison.a, d.comparison.b)}  # fmt: skip

    def look(self, k: int, have: Mapping[str, Sequence[float]]) -> list[Decision]:
        """Decide what look ``k`` can; ``have``: each arm's scores by seed (0, 1, ...)."""
        seeds, level = self.policy.looks()[k], self.levels[k] / len(self.decisions)
        decided = []
        for d in self.decisions.values():
            c = d.comparison
            if d.verdict != OPEN or min(len(have.get(c.a, ())), len(have.get(c.b, ()))) < seeds:
                continue
            diff = np.asarray(have[c.a][:seeds], float) - np.asarray(have[c.b][:seeds], float)
            verdict, mean, low, high = decide(diff, level, self.epsilon)
            d.seeds, d.difference, d.low, d.high, d.level = seeds, mean, low, high, level
            if verdict != OPEN:
                d.verdict, d.look = verdict, k
                decided.append(d)
        return decided


def run_sequential(
    scores: Callable[[str, int], float],
    arms: Sequence[str],
    comparisons: Sequence[Comparison],
    policy: SeedPolicy,
    epsilon: float,
    alpha: float = 0.05,
) -> SequentialResult:
    """Drive a study look by look. ``scores(arm, seed)`` runs (or reads) one cell; it is asked
    only for the cells an open comparison needs, each once."""
    design = SequentialDesign(comparisons, policy, epsilon, alpha)
    have: dict[str, list[float]] = {arm: [] for arm in arms}
    for k, seeds in enumerate(policy.looks()):
        needed = design.open_arms()
        if not needed:
            break
        for arm in arms:
            if arm in needed:
                have[arm].extend(scores(arm, s) for s in range(len(have[arm]), seeds))
        design.look(k, have)
    return SequentialResult(
        decisions=design.decisions,
        cells=sum(len(v) for v in have.values()),
        fixed_cells=policy.max * len(arms),
        seeds_by_arm={arm: len(v) for arm, v in have.items()},
    )


def simulate(
    means: Mapping[str, float],
    comparisons: Sequence[Comparison],
    policy: SeedPolicy,
    epsilon: float,
    studies: int,
    seed_sd: float = 1.0,
    cell_sd: float = 1.0,
    alpha: float = 0.05,
    rng_seed: int = 0,
) -> dict[str, float]:
    """Synthetic studies: a cell's score is its arm's mean, plus a seed's effect shared by every
    arm at that seed, plus the cell's own noise. Returns the familywise rate of DIFFERS on a
    comparison whose arms have equal means, the rate of any DIFFERS on comparisons whose arms
    differ (power), and the mean cells against the fixed design."""
    rng = np.random.default_rng(rng_seed)
    arms = list(means)
    false_positive = found = 0
    cells = []
    true_null = {c.name for c in comparisons if means[c.a] == means[c.b]}
    for _ in range(studies):
        seed_effect = rng.normal(0, seed_sd, policy.max)
        noise = rng.normal(0, cell_sd, (len(arms), policy.max))
        table = {a: means[a] + seed_effect + noise[i] for i, a in enumerate(arms)}
        out = run_sequential(
            lambda arm, s, t=table: float(t[arm][s]), arms, comparisons, policy, epsilon, alpha
        )
        false_positive += any(
            d.verdict == DIFFERS for n, d in out.decisions.items() if n in true_null
        )
        found += any(d.verdict == DIFFERS for n, d in out.decisions.items() if n not in true_null)
        cells.append(out.cells)
    return {
        "studies": studies,
        "familywise_false_positive": false_positive / studies,
        "any_true_difference_found": found / studies,
        "mean_cells": float(np.mean(cells)),
        "fixed_cells": policy.max * len(arms),
    }
