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
