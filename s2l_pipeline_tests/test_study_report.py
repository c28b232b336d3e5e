"""The study's report from cells whose truth is known: a selector built to win, one built to
lose, budgets that reach full data and one that does not, and a curve with a dip."""

from __future__ import annotations

import numpy as np
import pytest

from s2l_pipeline.core.study.report import StudyCell, build_report, paired


def _cells(effects: dict[tuple[str, float], float], seeds: int = 5, noise: float = 0.002):
    """Scores = 0.5 + a seed effect shared by every cell of a seed + the cell's own effect."""
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 0.03, seeds)
    return [
        StudyCell(m, b, s, 0.5 + seed_effect[s] + e + rng.normal(0, noise), nll=2.0 - e)
        for (m, b), e in effects.items()
        for s in range(seeds)
    ]


EFFECTS = {
    ("full", 1.0): 0.0,
    ("random", 0.1): -0.10,
    ("random", 0.2): -0.002,
    ("random", 0.4): -0.001,
    ("s2l", 0.1): -0.05,  # +5 points over random at 0.1
    ("s2l", 0.2): -0.03,  # below random at 0.2
    ("s2l", 0.4): -0.06,  # a real drop from 0.2 to 0.4
}


def test_report_finds_what_the_cells_were_built_to_show() -> None:
    r = build_report(_cells(EFFECTS), epsilon=1.0)
    win = next(p for p in r.vs_random if p.method == "s2l" and p.budget == 0.1)
    assert 3 < win.difference < 7 and win.low > 0 and win.seeds == 5
    loss = next(p for p in r.vs_random if p.method == "s2l" and p.budget == 0.2)
    assert loss.high < 0
    # Random reaches full data within 1 point at 0.2; S2L never does.
    assert r.smallest_budget_within_epsilon == {"random": 0.2, "s2l": None}
    assert r.best_by_budget == {0.1: "s2l", 0.2: "random", 0.4: "random"}
    assert any("s2l at 40%" in n and "a real drop" in n for n in r.not_monotone)
    text = " ".join(r.recommendation)
    assert "random at 20% of the pool is within 1 point of full data" in text
    assert "s2l at 10% beats random by +5" in text
    assert "Worse than random: s2l at 20%, s2l at 40%." in text


def test_no_winner_says_what_the_study_can_detect() -> None:
    same = {("full", 1.0): 0.0, ("random", 0.1): -0.05, ("s2l", 0.1): -0.05}
    r = build_report(_cells(same, noise=0.01))
    [d] = r.vs_random
    assert d.low < 0 < d.high
    assert r.smallest_budget_within_epsilon == {"random": None, "s2l": None}
    assert r.recommendation[0].startswith("No budget studied comes within 1 point")
    assert f"the {d.minimum_detectable:.1f}-point difference this study" in r.recommendation[1]


def test_non_inferiority_is_one_sided_and_pairs_seeds() -> None:
    """0.6 points below full, tight: within 1 point, and the one-sided bound is tighter than
    the two-sided one; a seed missing from full is left out of the pairs."""
    cells = _cells({("full", 1.0): 0.0, ("random", 0.2): -0.006}, noise=0.001)
    d = paired(cells, "random", 0.2, "full", 1.0)
    assert d.one_sided_low > -1.0 and d.low < d.one_sided_low
    fewer = [c for c in cells if not (c.method == "full" and c.seed == 4)]
    assert paired(fewer, "random", 0.2, "full", 1.0).seeds == 4
    one = [c for c in cells if c.seed == 0]
    assert paired(one, "random", 0.2, "full", 1.0) is None  # one seed: no interval


def test_recomputing_from_the_cells_gives_the_same_report() -> None:
    cells = _cells(EFFECTS)
    a, b = build_report(cells), build_report(list(reversed(cells)))
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize("eps, expected", [(0.1, None), (20.0, 0.1)])
def test_epsilon_moves_the_smallest_budget(eps, expected) -> None:
    r = build_report(_cells(EFFECTS), epsilon=eps)
    assert r.smallest_budget_within_epsilon["random"] == expected


def test_no_best_method_on_a_tie_inside_the_noise_or_from_too_few_seeds() -> None:
    tie = build_report(_cells({("random", 0.1): 0.0, ("s2l", 0.1): 0.0}, noise=0.0))
    assert tie.best_by_budget[0.1].startswith("none (a tie")
    close = build_report(_cells({("random", 0.1): 0.0, ("s2l", 0.1): 0.001}, noise=0.01))
    assert "within the noise" in close.best_by_budget[0.1]
    two = build_report(_cells(EFFECTS, seeds=2))
    assert all(v.startswith("none (fewer than 3 seeds") for v in two.best_by_budget.values())
    # Two seeds: the recommendation says why it gives no interval, and gives none.
    assert "none is given" in two.recommendation[0] and "[" not in " ".join(two.recommendation)


def test_the_page_prints_no_interval_from_fewer_than_three_seeds() -> None:
    from s2l_pipeline.core.study.render import _ci

    two = build_report(_cells(EFFECTS, seeds=2))
    assert all("no interval from 2 seeds; 3 needed" in _ci(p) for p in two.vs_random)
    five = build_report(_cells(EFFECTS))
    assert all("[" in _ci(p) for p in five.vs_random)
    flat = build_report(_cells({("random", 0.1): 0.0, ("s2l", 0.1): 0.0}, noise=0.0))
    assert all("an interval of no width" in _ci(p) for p in flat.vs_random)
