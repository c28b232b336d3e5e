"""Group-sequential seeds (core/study/sequential.py): alpha spent over the looks, decided
comparisons stop their arms, and, on 2,000 synthetic studies, the familywise false-positive
rate under the null stays at or below 5% while the looks save cells."""

import numpy as np
import pytest

from s2l_pipeline.core.study.sequential import (
    DIFFERS,
    EQUIVALENT,
    OPEN,
    Comparison,
    SeedPolicy,
    look_levels,
    obrien_fleming_spent,
    run_sequential,
    simulate,
)

POLICY = SeedPolicy(min=5, max=30, look_every=5)
ALL_PAIRS = [Comparison("s2l", "random"), Comparison("s2l", "full"), Comparison("random", "full")]


def test_looks_spend_alpha_little_early_and_all_by_the_last() -> None:
    assert POLICY.looks() == [5, 10, 15, 20, 25, 30]
    assert SeedPolicy(min=3, max=10, look_every=4).looks() == [3, 7, 10]
    levels = look_levels(POLICY, 0.05)
    assert sum(levels) == pytest.approx(0.05)
    assert all(x > 0 for x in levels) and levels[0] < 1e-4  # a first look at 1/6 of the seeds
    assert obrien_fleming_spent(1.0, 0.05) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="min must be at least 2"):
        SeedPolicy(min=1)
    with pytest.raises(ValueError, match="min <= max"):
        SeedPolicy(min=10, max=5)


def test_a_clear_difference_stops_early_and_its_arms_get_no_more_cells() -> None:
    asked: list[tuple[str, int]] = []

    def score(arm: str, seed: int) -> float:
        asked.append((arm, seed))
        wobble = ((seed * 7919) % 13 - 6) / 60  # shared by the arms at a seed, so paired away
        own = ((seed * 31 + len(arm)) % 7 - 3) / 10_000  # each cell's own, tiny
        return {"s2l": 0.60, "random": 0.40, "full": 0.60}[arm] + wobble + own

    out = run_sequential(score, ["s2l", "random", "full"], ALL_PAIRS, POLICY, epsilon=0.01)
    d = out.decisions
    assert d["s2l - random"].verdict == DIFFERS and d["s2l - random"].look == 0
    assert d["random - full"].verdict == DIFFERS
    assert d["s2l - full"].verdict == EQUIVALENT  # within 0.0006 of each other, seed by seed
    assert len(asked) == len(set(asked)) == out.cells == 15  # every cell once, 5 seeds an arm
    assert out.fixed_cells == 90


def test_seeds_that_all_give_one_difference_decide_nothing() -> None:
    """A collapsed target scores one constant: identical differences make no interval."""
    from s2l_pipeline.core.study.sequential import decide

    assert decide(np.full(5, 0.02), 0.01, epsilon=1.0)[0] == OPEN
    assert decide(np.zeros(5), 0.01, epsilon=1.0)[0] == OPEN
    # One item of 35 on every seed, in points: 2.857142857142854 and ...861 after rounding
    one_item = 100 * np.array([18, 20, 11, 25, 7]) / 35 - 100 * np.array([17, 19, 10, 24, 6]) / 35
    assert float(np.std(one_item)) > 0  # what the check must see through
    assert decide(one_item, 0.01, epsilon=1.0)[0] == OPEN


def test_an_open_comparison_keeps_only_its_own_arms_running() -> None:
    rng = np.random.default_rng(3)
    noise = {a: rng.normal(0, 1, 30) for a in ("a", "b", "c")}
    means = {"a": 0.0, "b": 0.0, "c": 10.0}
    out = run_sequential(
        lambda arm, s: means[arm] + noise[arm][s],
        ["a", "b", "c"],
        [Comparison("a", "b"), Comparison("a", "c")],
        POLICY,
        epsilon=0.01,
    )
    decided = out.decisions["a - c"]
    # 5 seeds spend almost nothing (a t quantile near 50 at 4 degrees of freedom): 10 decide it
    assert decided.verdict == DIFFERS and decided.look == 1 and decided.seeds == 10
    assert out.decisions["a - b"].verdict == OPEN  # equal means, an epsilon far below the noise
    assert out.seeds_by_arm == {"a": 30, "b": 30, "c": 10}


def test_familywise_false_positives_under_the_null_stay_at_or_below_five_percent() -> None:
    """Cell scores in units of the cell's own noise (a seed effect of the same size shared by
    the arms); 2,000 simulated studies per scenario; the figures are in docs/benchmarks.md."""
    null = simulate({"s2l": 0.0, "random": 0.0, "full": 0.0}, ALL_PAIRS, POLICY, epsilon=1.5,
                    studies=2000, rng_seed=1)  # fmt: skip
    assert null["studies"] == 2000
    assert null["familywise_false_positive"] <= 0.05
    assert null["mean_cells"] < null["fixed_cells"]  # equivalence decided before 30 seeds
    # One arm better by two noise SDs (past epsilon): found nearly always; random - full is null.
    one = simulate({"s2l": 2.0, "random": 0.0, "full": 0.0}, ALL_PAIRS, POLICY, epsilon=1.5,
                   studies=2000, rng_seed=2)  # fmt: skip
    assert one["familywise_false_positive"] <= 0.05
    assert one["any_true_difference_found"] > 0.9
    assert one["mean_cells"] < one["fixed_cells"]
    # Every pair differs: decided early, the arms stop.
    apart = simulate({"s2l": 1.0, "random": 0.0, "full": 2.0}, ALL_PAIRS, POLICY, epsilon=0.5,
                     studies=2000, rng_seed=3)  # fmt: skip
    assert apart["any_true_difference_found"] == 1.0
    assert apart["mean_cells"] < 0.9 * apart["fixed_cells"]
    for name, r in (("null", null), ("one better", one), ("all apart", apart)):
        print(f"{name}: {r}")


def test_seeds_flag_and_the_comparisons_a_study_decides() -> None:
    from s2l_pipeline.core.study.spec import from_flags
    from s2l_pipeline.study_cli import _seeds

    assert _seeds("3") == 3
    assert _seeds("5:30:5") == SeedPolicy(5, 30, 5)
    for bad, said in (("5:30", "MIN:MAX:EVERY"), ("a", "a count"), ("1:4:1", "min must be")):
        with pytest.raises(ValueError, match=said):
            _seeds(bad)
    names = [c.name for c in from_flags(["s2l"], [0.3, 0.1], 2, 1.0).pairs()]
    assert names == [
        "s2l@0.1 - random@0.1",
        "s2l@0.3 - random@0.3",
        "s2l@0.1 - full",
        "s2l@0.3 - full",
        "random@0.1 - full",
        "random@0.3 - full",
    ]


@pytest.mark.slow
def test_s2l_study_with_sequential_seeds_stops_what_a_look_decided(tmp_path) -> None:
    """`s2l study --seeds 2:4:2` as a user runs it: each look runs only what an open
    comparison needs, says what it decided, and the summary records every decision."""
    import json
    import subprocess

    from .conftest import s2l_cmd, s2l_env

    cmd = [*s2l_cmd(), "study", "--profile", "tiny", "--methods", "random", "--budgets", "0.3",
           "--seeds", "2:4:2", "--epsilon", "100000"]  # fmt: skip
    done = subprocess.run(cmd, env=s2l_env(tmp_path, profile=None), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "8 cells at most" in done.stderr and "if no look decides anything" in done.stderr
    assert "look 1 at 2 seeds" in done.stderr
    seq = out["sequential"]
    [decision] = seq["decisions"]
    assert decision["comparison"] == "random@0.3 - full" and seq["fixed_cells"] == 8
    # The tiny target is collapsed (one answer for most rows): two seeds may give one
    # difference, which decides nothing; then look 2 runs seeds 2 and 3.
    if decision["look"] == 1:
        assert "look 2" not in done.stderr and out["cells_run"] == seq["cells_run"] == 4
    else:
        assert "look 2 at 4 seeds" in done.stderr and out["cells_run"] == seq["cells_run"] == 8
    assert decision["verdict"] == "equivalent"  # an epsilon of 100,000 points holds any interval
    assert out["cells"] == out["cells_run"]  # the report holds what ran, nothing more
