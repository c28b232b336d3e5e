"""Paired bootstrap over test items and seeds, and the minimum detectable difference."""

from __future__ import annotations

import numpy as np
import pytest

from s2l_pipeline.core.evaluation.stats import pack_correct, paired_bootstrap, unpack_correct


def _bernoulli(rng, p, shape):
    return (rng.random(shape) < p).astype(float)


def test_a_real_difference_is_found_and_bounded() -> None:
    rng = np.random.default_rng(0)
    b = _bernoulli(rng, 0.3, (3, 1800))
    a = b.copy()
    zeros = np.argwhere(a == 0)
    flip = zeros[rng.choice(len(zeros), int(0.05 * a.size), replace=False)]
    a[flip[:, 0], flip[:, 1]] = 1  # a solves 5% more items than b, on the same seeds
    out = paired_bootstrap(a, b, resamples=2000)
    assert out.difference == pytest.approx(0.05, abs=1e-3)
    assert 0 < out.low < out.difference < out.high
    assert out.minimum_detectable < out.difference  # this design can see a 5-point gain
    assert (out.items, out.seeds) == (1800, 3)


def test_identical_methods_differ_by_nothing() -> None:
    b = _bernoulli(np.random.default_rng(1), 0.4, (2, 500))
    out = paired_bootstrap(b, b.copy(), resamples=500)
    assert out.difference == out.low == out.high == 0.0


def test_under_the_null_the_interval_usually_holds_zero() -> None:
    rng = np.random.default_rng(2)
    held = 0
    for trial in range(40):
        a, b = _bernoulli(rng, 0.3, (3, 300)), _bernoulli(rng, 0.3, (3, 300))
        out = paired_bootstrap(a, b, resamples=400, seed=trial)
        held += out.low <= 0 <= out.high
    assert held >= 34  # 95% nominal; 40 trials leave room for noise


def test_more_items_detect_smaller_differences() -> None:
    rng = np.random.default_rng(3)
    small = paired_bootstrap(
        _bernoulli(rng, 0.3, (3, 150)), _bernoulli(rng, 0.3, (3, 150)), resamples=800
    )
    large = paired_bootstrap(
        _bernoulli(rng, 0.3, (3, 1800)), _bernoulli(rng, 0.3, (3, 1800)), resamples=800
    )
    ratio = small.minimum_detectable / large.minimum_detectable
    assert 2 < ratio < 6  # ~ sqrt(1800 / 150) = 3.5 in expectation; 3 seeds make it noisy


def test_paired_means_same_items_and_seeds() -> None:
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(np.zeros((3, 10)), np.zeros((2, 10)))


def test_correctness_packs_into_a_string_and_back() -> None:
    values = [True, False, False, True, True]
    assert pack_correct(values) == "10011"
    assert unpack_correct("10011").tolist() == [1, 0, 0, 1, 1]


def test_per_seed_interval_is_the_t_interval_of_the_seed_means() -> None:
    """Against scipy's one-sample t interval of the per-seed differences."""
    from scipy import stats as sps

    from s2l_pipeline.core.evaluation.stats import per_seed_difference

    rng = np.random.default_rng(3)
    a = (rng.random((5, 300)) < 0.55).astype(float)
    b = (rng.random((5, 300)) < 0.45).astype(float)
    found = per_seed_difference(a, b)
    d = (a - b).mean(axis=1)
    ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert found.seeds == 5 and np.allclose(found.per_seed, d)
    assert np.isclose(found.low, ci.low) and np.isclose(found.high, ci.high)
    assert np.isclose(found.difference, d.mean()) and np.isclose(found.seed_sd, d.std(ddof=1))


def test_five_seeds_cannot_reach_p_below_one_sixteenth() -> None:
    from s2l_pipeline.core.evaluation.stats import sign_flip_p

    assert sign_flip_p(np.array([0.05, 0.08, 0.02, 0.11, 0.04])) == 2 / 32
    assert sign_flip_p(np.full(15, 0.03)) == 2 / 2**15
    assert sign_flip_p(np.array([0.1, -0.1, 0.1, -0.1])) == 1.0
    # one seed against the rest: p counts every pattern at least as extreme
    assert sign_flip_p(np.array([1.0, 1.0, 1.0, -1.0])) == 10 / 16


def test_sign_flip_sampling_agrees_with_enumeration() -> None:
    from s2l_pipeline.core.evaluation import stats as st

    d = np.random.default_rng(1).normal(0.02, 0.05, 12)
    exact = st.sign_flip_p(d)
    old, st.EXACT_SIGN_FLIP_SEEDS = st.EXACT_SIGN_FLIP_SEEDS, 4
    try:
        sampled = st.sign_flip_p(d, samples=200_000)
    finally:
        st.EXACT_SIGN_FLIP_SEEDS = old
    assert abs(sampled - exact) < 0.01


def test_holm_step_down() -> None:
    from s2l_pipeline.core.evaluation.stats import holm

    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    # sorted 0.005 x4, 0.01 x3, 0.03 x2, 0.04 x1, made non-decreasing
    assert adjusted == pytest.approx({"d": 0.02, "a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_per_seed_interval_holds_its_level_under_the_null() -> None:
    """No effect on average, but each seed's selection moves the difference (SD 5 points,
    beyond the item noise): the 95% t interval over seeds covers 0 in about 95% of designs."""
    from s2l_pipeline.core.evaluation.stats import per_seed_difference

    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        seed_effect = rng.normal(0, 0.05, (5, 1))  # this seed's true difference; mean 0
        a = (rng.random((5, 200)) < 0.4 + seed_effect).astype(float)
        b = (rng.random((5, 200)) < 0.4).astype(float)
        found = per_seed_difference(a, b)
        covered += found.low <= 0 <= found.high
    assert 0.92 <= covered / 400 <= 0.98


def test_minimum_detectable_shrinks_with_seeds() -> None:
    from s2l_pipeline.core.evaluation.stats import per_seed_difference

    rng = np.random.default_rng(0)
    few = per_seed_difference(rng.normal(0.02, 0.05, 5), np.zeros(5))
    many = per_seed_difference(rng.normal(0.02, 0.05, 20), np.zeros(20))
    assert many.minimum_detectable < few.minimum_detectable
