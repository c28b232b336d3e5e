"""What a selection study's cells add up to: curves, paired intervals, the smallest budget
within epsilon of full data, the best method per budget, and a recommendation in words.

The seed is the unit of replication: each (method, budget, seed) cell gives one score, and a
comparison pairs cells of the same seed (the same target initialisation and data order), so
every interval here comes from per-seed differences (t, seeds - 1 degrees of freedom).
Scores are fractions (accuracy or ROUGE-L); differences are reported in points (x100).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..evaluation.stats import holm, per_seed_difference

FULL = "full"  # the method name of full-data cells (budget 1.0)
BASELINE = "random"


@dataclass(frozen=True)
class StudyCell:
    """One finished cell: its score on the validation split, and its NLL there."""

    method: str
    budget: float
    seed: int
    score: float
    nll: float | None = None
    floor: float | None = None  # the most common training answer's score on the same split
    collapsed: bool = False  # one prediction for most rows of a judged set
    draw: int | None = None  # with draws, the data draw the seed is nested in


@dataclass(frozen=True)
class CurvePoint:
    method: str
    budget: float
    mean: float
    seeds: int
    nll: float | None
    floor: float | None = None  # mean over the seeds of each cell's most-common-answer score


@dataclass(frozen=True)
class Paired:
    """``method`` at ``budget`` minus a reference, in points, over the seeds both have."""

    method: str
    budget: float
    against: str
    difference: float
    low: float
    high: float
    one_sided_low: float  # the one-sided (level) lower bound, for non-inferiority
    minimum_detectable: float
    seeds: int  # the replicates behind the interval: seeds, or draws when ``draws``
    p: float
    draws: int = 0  # > 0: seeds nested in this many data draws, the draw the unit

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Registered:
    """A comparison the spec named, at one budget: its paired interval and its p-value,
    raw and Holm-adjusted across every registered comparison of the report."""

    arm: str
    against: str
    budget: float
    difference: float
    low: float
    high: float
    seeds: int
    minimum_detectable: float
    p: float
    p_holm: float

    @property
    def name(self) -> str:
        against = self.against if self.against == FULL else f"{self.against}@{self.budget:g}"
        return f"{self.arm}@{self.budget:g} vs {against}"


@dataclass
class StudyReport:
    curve: list[CurvePoint]
    vs_random: list[Paired]
    vs_full: list[Paired]
    epsilon: float
    smallest_budget_within_epsilon: dict[str, float | None]
    best_by_budget: dict[float, str]
    not_monotone: list[str]
    recommendation: list[str] = field(default_factory=list)
    floor: float | None = None  # answering every row with the most common answer (full data's)
    seeds: int = 0  # the fewest seeds behind any curve point
    collapsed: dict[str, int] = field(default_factory=dict)  # "method at budget" -> cells
    cells: int = 0
    registered: list[Registered] = field(default_factory=list)
    endpoint: str = "score"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["best_by_budget"] = {str(k): v for k, v in self.best_by_budget.items()}
        return out


def _by_key(cells: Iterable[StudyCell]) -> dict[tuple[str, float], dict[int, StudyCell]]:
    found: dict[tuple[str, float], dict[int, StudyCell]] = defaultdict(dict)
    for c in cells:
        found[(c.method, float(c.budget))][c.seed if c.draw is None else (c.draw, c.seed)] = c
    return found


def curve(cells: Iterable[StudyCell]) -> list[CurvePoint]:
    """Mean score (and NLL) per method and budget, over its seeds."""
    out = []
    for (method, budget), by_seed in sorted(_by_key(cells).items()):
        seeds = dict(sorted(by_seed.items()))  # one summation order, whatever the input's
        nlls = [c.nll for c in seeds.values() if c.nll is not None]
        floors = [c.floor for c in seeds.values() if c.floor is not None]
        out.append(
            CurvePoint(
                method,
                budget,
                float(np.mean([c.score for c in seeds.values()])),
                len(seeds),
                float(np.mean(nlls)) if nlls else None,
                float(np.mean(floors)) if floors else None,
            )
        )
    return out


def paired(
    cells: Iterable[StudyCell],
    method: str,
    budget: float,
    against: str,
    against_budget: float,
    level: float = 0.95,
) -> Paired | None:
    """``method`` at ``budget`` minus ``against`` at ``against_budget``, seed by seed; None
    with fewer than two shared seeds. With seeds nested in data draws, the unit is the draw:
    each draw's mean paired difference over the seeds every draw has, a t interval over the
    draws (the seeds' spread within a draw is not the spread between draws)."""
    by = _by_key(cells)
    a, b = by.get((method, float(budget)), {}), by.get((against, float(against_budget)), {})
    seeds = sorted(set(a) & set(b))
    if seeds and isinstance(seeds[0], tuple):
        return _paired_over_draws(a, b, seeds, method, budget, against, level)
    if len(seeds) < 2:
        return None
    x = np.array([a[s].score for s in seeds]) * 100
    y = np.array([b[s].score for s in seeds]) * 100
    return _paired(x, y, method, budget, against, level)


def _paired_over_draws(a, b, keys, method, budget, against, level) -> Paired | None:
    draws = sorted({d for d, _ in keys})
    seeds = sorted(set.intersection(*({s for d2, s in keys if d2 == d} for d in draws)))
    if len(draws) < 2 or not seeds:
        return None
    x = np.array([[a[(d, s)].score for s in seeds] for d in draws]) * 100
    y = np.array([[b[(d, s)].score for s in seeds] for d in draws]) * 100
    return _paired(x, y, method, budget, against, level, draws=len(draws))


def _paired(x, y, method, budget, against, level, draws: int = 0) -> Paired:
    d = per_seed_difference(x, y, level=level)
    one_sided = per_seed_difference(x, y, level=1 - 2 * (1 - level)).low
    return Paired(
        method,
        float(budget),
        against,
        d.difference,
        d.low,
        d.high,
        one_sided,
        d.minimum_detectable,
        d.seeds,
        d.p_sign_flip,
        draws,
    )


def smallest_within_epsilon(vs_full: list[Paired], epsilon: float) -> dict[str, float | None]:
    """Per method, the smallest budget whose one-sided lower bound against full data lies
    above -epsilon (non-inferiority at the level): None when no budget does."""
    out: dict[str, float | None] = {}
    for p in sorted(vs_full, key=lambda p: (p.method, p.budget)):
        out.setdefault(p.method, None)
        if out[p.method] is None and p.one_sided_low > -epsilon:
            out[p.method] = p.budget
    return out


def best_by_budget(points: list[CurvePoint], cells: list[StudyCell] | None = None
                   ) -> dict[float, str]:  # fmt: skip
    """At each budget the method of highest mean, named only when it beats the runner-up with
    a paired interval above zero over at least MIN_SEEDS seeds; else why none is named."""
    best: dict[float, str] = {}
    by_budget: dict[float, list[CurvePoint]] = defaultdict(list)
    for p in points:
        if p.method != FULL:
            by_budget[p.budget].append(p)
    for budget, pts in sorted(by_budget.items()):
        pts.sort(key=lambda p: (-p.mean, p.method))
        if len(pts) < 2:
            best[budget] = f"none (only {pts[0].method} was run)"
            continue
        top, second = pts[0], pts[1]
        if top.mean == second.mean:
            best[budget] = f"none (a tie: {top.method} and {second.method})"
            continue
        d = paired(cells, top.method, budget, second.method, budget) if cells else None
        if d is None or d.seeds < MIN_SEEDS:
            best[budget] = (
                f"none (fewer than {MIN_SEEDS} seeds to tell {top.method} from {second.method})"
            )
        elif d.low <= 0:
            best[budget] = (f"none ({top.method} leads {second.method} by {d.difference:+.1f} "
                            f"[{d.low:+.1f}, {d.high:+.1f}], within the noise)")  # fmt: skip
        else:
            best[budget] = top.method
    return best


def not_monotone(cells: Iterable[StudyCell], points: list[CurvePoint]) -> list[str]:
    """Where a method scores lower at a larger budget: each drop, with whether the seeds call
    it real (a paired interval below zero) or within the noise."""
    cells = list(cells)
    notes = []
    by_method: dict[str, list[CurvePoint]] = defaultdict(list)
    for p in points:
        if p.method != FULL:
            by_method[p.method].append(p)
    for method, pts in sorted(by_method.items()):
        pts.sort(key=lambda p: p.budget)
        for lo, hi in zip(pts, pts[1:], strict=False):
            if hi.mean >= lo.mean:
                continue
            d = paired(cells, method, hi.budget, method, lo.budget)
            real = d is not None and d.high < 0
            notes.append(
                f"{method} at {_pct(hi.budget)} scores {100 * (lo.mean - hi.mean):.1f} points "
                f"below {_pct(lo.budget)} ({'a real drop' if real else 'within the noise'})"
            )
    return notes


def registered_comparisons(
    cells: list[StudyCell], comparisons: Iterable[tuple[str, str]]
) -> list[Registered]:
    """Each named comparison at every budget its arm was run at, paired by seed; Holm's
    adjustment across all of them (the report's family), not per budget."""
    budgets = sorted({c.budget for c in cells if c.method != FULL})
    found = []
    for arm, against in comparisons:
        for b in budgets:
            d = paired(cells, arm, b, against, 1.0 if against == FULL else b)
            if d is not None:
                found.append((arm, against, b, d))
    adjusted = holm({str(i): d.p for i, (*_, d) in enumerate(found)})
    return [
        Registered(
            arm,
            against,
            b,
            d.difference,
            d.low,
            d.high,
            d.seeds,
            d.minimum_detectable,
            d.p,
            adjusted[str(i)],
        )  # fmt: skip
        for i, (arm, against, b, d) in enumerate(found)
    ]


def build_report(
    cells: Iterable[StudyCell],
    epsilon: float = 1.0,
    comparisons: Iterable[tuple[str, str]] | None = None,
    endpoint: str = "score",
) -> StudyReport:
    """Every comparison the study can make from its finished cells; ``comparisons`` (the
    spec's, default every arm against random and against full) get Holm across them."""
    cells = list(cells)
    if comparisons is None:
        arms = sorted({c.method for c in cells if c.method != FULL})
        comparisons = [(a, BASELINE) for a in arms if a != BASELINE] + [(a, FULL) for a in arms]
    points = curve(cells)
    keys = sorted({(p.method, p.budget) for p in points if p.method != FULL})
    vs_random = [
        d for m, b in keys if m != BASELINE and (d := paired(cells, m, b, BASELINE, b)) is not None
    ]
    vs_full = [d for m, b in keys if (d := paired(cells, m, b, FULL, 1.0)) is not None]
    collapsed: dict[str, int] = defaultdict(int)
    for c in sorted(cells, key=lambda c: (c.method, c.budget)):
        if c.collapsed:
            collapsed[f"{c.method} at {_pct(c.budget)}"] += 1
    report = StudyReport(
        collapsed=dict(collapsed),
        cells=len(cells),
        floor=study_floor(cells),
        seeds=min((p.seeds for p in points), default=0),
        curve=points,
        vs_random=vs_random,
        vs_full=vs_full,
        epsilon=epsilon,
        smallest_budget_within_epsilon=smallest_within_epsilon(vs_full, epsilon),
        best_by_budget=best_by_budget(points, cells),
        not_monotone=not_monotone(cells, points),
        registered=registered_comparisons(cells, comparisons),
        endpoint=endpoint,
    )
    report.recommendation = recommend(report)
    return report


MIN_SEEDS = 3  # fewer seeds give intervals too wide (or, at the floor, degenerate) to trust


def study_floor(cells: list[StudyCell]) -> float | None:
    """The most common training answer's score: full data's when the study has it."""
    full = [c.floor for c in cells if c.method == FULL and c.floor is not None]
    every = [c.floor for c in cells if c.floor is not None]
    found = full or every
    return float(np.mean(found)) if found else None


def recommend(r: StudyReport) -> list[str]:
    """A few plain sentences, each with the confidence behind it; a study whose target does
    not beat the most common answer, or that has too few seeds, says so first."""
    out = []
    n_collapsed = sum(r.collapsed.values())
    if r.cells and n_collapsed == r.cells:
        out.append(
            "Every cell's target answers one string to most rows of a judged set (a "
            "collapsed model): its scores are that string's, not the data's, so no comparison "
            "of them is made here. Train the study target longer, or a larger one, or allow "
            "longer generations (max_new_tokens)."
        )
        return out + _nll_sentence(r)
    if n_collapsed:
        where = ", ".join(f"{k} ({n})" for k, n in r.collapsed.items())
        out.append(
            f"{n_collapsed} of {r.cells} cells answer one string to most rows of a judged "
            f"set (a collapsed model; cells per point): {where}. Their scores are that "
            "string's; read those points with care."
        )
    judged = [p for p in r.curve if p.floor is not None]
    at_floor = [p for p in judged if p.mean <= p.floor]
    if judged and len(at_floor) == len(judged):
        out.append(
            "No method at any budget scores above answering every row with its training "
            "rows' most common answer: the study target has not learned this task at this "
            "scale, so its scores say nothing about the data (no comparison of them is made "
            "here). Train the study target longer, or a larger one."
        )
        return out + _nll_sentence(r)
    if at_floor:
        names = ", ".join(
            f"{p.method} at {_pct(p.budget)} ({100 * p.mean:.1f} vs {100 * p.floor:.1f})"
            for p in at_floor
        )
        out.append(f"At or below the most-common-answer floor: {names}.")
    if r.seeds < MIN_SEEDS:
        out.append(
            f"Only {r.seeds} seed{'s' if r.seeds != 1 else ''} per cell: an interval from so "
            f"few seeds is too wide (or, at the floor, degenerate) to say anything, so none is "
            f"given; run {MIN_SEEDS} or more (--seeds)."
        )
        return out + _nll_sentence(r)
    within = {m: b for m, b in r.smallest_budget_within_epsilon.items() if b is not None}
    if not r.vs_full:
        out.append("No full-data cells: how small the budget may go is not measured.")
    elif within:
        budget = min(within.values())
        methods = sorted(m for m, b in within.items() if b == budget)
        seeds = min(p.seeds for p in r.vs_full if p.method in methods and p.budget == budget)
        out.append(
            f"On this data, {' and '.join(methods)} at {_pct(budget)} of the pool "
            f"{'is' if len(methods) == 1 else 'are'} within {r.epsilon:g} point"
            f"{'' if r.epsilon == 1 else 's'} of full data (one-sided 95%, {seeds} seeds)."
        )
    else:
        out.append(
            f"No budget studied comes within {r.epsilon:g} point"
            f"{'' if r.epsilon == 1 else 's'} of full data with 95% confidence: train on "
            "more, or run more seeds."
        )
    wins = [p for p in r.vs_random if p.low > 0]
    losses = [p for p in r.vs_random if p.high < 0]
    if r.vs_random:
        detectable = max(p.minimum_detectable for p in r.vs_random)
        if wins:
            best = max(wins, key=lambda p: p.difference)
            out.append(
                f"{best.method} at {_pct(best.budget)} beats random by "
                f"{best.difference:+.1f} points [{best.low:+.1f}, {best.high:+.1f}] "
                f"({best.seeds} seeds); "
                f"{len(wins)} of {len(r.vs_random)} comparisons beat random (95% intervals, "
                "not corrected for their number)."
            )
        elif detectable == 0:
            out.append(
                "Every seed gave the same difference from random: the intervals have no width "
                "and say nothing (a constant score, most likely); look at the predictions."
            )
        else:
            out.append(
                "No selector beats random by more than the "
                f"{detectable:.1f}-point difference this study can detect."
            )
        if losses:
            names = ", ".join(f"{p.method} at {_pct(p.budget)}" for p in losses)
            out.append(f"Worse than random: {names}.")
    out += _holm_sentence(r)
    if r.not_monotone:
        out.append(f"The curve is not monotone: {'; '.join(r.not_monotone)}.")
    return out


def _holm_sentence(r: StudyReport) -> list[str]:
    """Which registered comparisons hold with Holm's correction across all of them."""
    if not r.registered:
        return []
    held = [c for c in r.registered if c.p_holm <= 0.05]
    n = len(r.registered)
    if not held:
        return [f"None of the {n} registered comparisons holds at 5% after Holm's correction "
                "across all of them."]  # fmt: skip
    names = "; ".join(f"{c.name} {c.difference:+.1f} (Holm p {c.p_holm:.3f})" for c in held)
    return [f"{len(held)} of {n} registered comparisons hold at 5% after Holm's correction "
            f"across all of them: {names}."]  # fmt: skip


def _nll_sentence(r: StudyReport) -> list[str]:
    """What the validation NLL shows when the scores cannot: whether more data still helps."""
    pts = [p for p in r.curve if p.nll is not None]
    if not pts:
        return []
    small = min(pts, key=lambda p: (p.budget, p.nll))
    large = max(pts, key=lambda p: (p.budget, -p.nll))
    return [
        f"Validation NLL (which needs no correct answer) goes from {small.nll:.2f} "
        f"({small.method} at {_pct(small.budget)}) to {large.nll:.2f} ({large.method} at "
        f"{_pct(large.budget)}); the report's tables compare it per method."
    ]


def _pct(budget: float) -> str:
    return f"{100 * budget:g}%"
