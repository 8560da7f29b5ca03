"""Intervals over seeds and matched comparisons: known answers on toy data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atm_repro.intervals import (
    Interval,
    SweepPoint,
    diff_interval,
    interpolate,
    letter_aligned_diff,
    matched_diff,
    mean_interval,
)

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom


def test_mean_interval_known_cases():
    iv = mean_interval([0.3, 0.3, 0.3])
    assert (iv.estimate, iv.lo, iv.hi, iv.n) == pytest.approx((0.3, 0.3, 0.3, 3))
    iv = mean_interval([1.0, 2.0, 3.0])  # sd 1: half-width t(2) / sqrt(3)
    half = T_975_DF2 / math.sqrt(3)
    assert (iv.lo, iv.hi, iv.n) == pytest.approx((2 - half, 2 + half, 3))
    iv = mean_interval([0.1, 0.2, math.nan, 0.3, 0.4, 0.5])  # NaN (unscorable) dropped
    assert iv.n == 5 and iv.estimate == pytest.approx(0.3)
    assert 0.1 < iv.lo < 0.3 < iv.hi < 0.5
    single = mean_interval([0.7])
    assert single.estimate == 0.7 and math.isnan(single.lo) and single.format() == "0.700"
    assert mean_interval([math.nan]).format() == "n/a"


def test_three_seed_intervals_cover_the_truth_as_often_as_they_say():
    """With three seeds a normal-quantile (or bootstrap) interval covers the true
    mean far less often than 95%; Student t does not."""
    rng = np.random.default_rng(1)
    draws = rng.normal(2.0, 1.0, (2000, 3))
    covered = np.mean([(iv := mean_interval(d)).lo <= 2.0 <= iv.hi for d in draws])
    assert 0.93 <= covered <= 0.97
    diffs = rng.normal(0.0, 1.0, (2000, 2, 3)) * np.array([1.0, 3.0])[None, :, None]
    covered = np.mean([(iv := diff_interval(a, b)).lo <= 0.0 <= iv.hi for a, b in diffs])
    assert 0.93 <= covered <= 0.99  # Welch, unequal variances: slightly conservative


def test_diff_interval_and_the_verdict_rule():
    a, b = [1.0, 1.1, 0.9, 1.05, 0.95], [0.0, 0.1, -0.1, 0.05, -0.05]
    iv = diff_interval(a, b)
    assert iv.estimate == pytest.approx(1.0) and iv.excludes_zero and iv.lo > 0.8
    welch = diff_interval([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])  # all variance on one side:
    half = T_975_DF2 / math.sqrt(3)                          # Welch's df is that side's
    assert (welch.lo, welch.hi) == pytest.approx((2 - half, 2 + half))
    same = diff_interval(a, list(reversed(a)))
    assert same.estimate == pytest.approx(0.0) and not same.excludes_zero
    one = diff_interval([1.0], [0.0, 0.5])
    assert one.estimate == pytest.approx(0.75) and math.isnan(one.lo) and one.n == 1
    assert not Interval(0.5, -0.1, 1.0, 5).excludes_zero
    assert Interval(-0.5, -1, -0.1, 5).excludes_zero


def test_letters_are_aligned_before_the_seeds_are_compared():
    a = np.array([[0.2, 0.4, np.nan], [0.3, 0.5, 0.9]])  # letter 2 scored by a only
    b = np.array([[0.1, 0.1, np.nan], [0.1, 0.3, np.nan]])
    iv = letter_aligned_diff(a, b)
    # seed means over letters 0 and 1 only: a (0.3, 0.4), b (0.1, 0.2)
    want = diff_interval([0.3, 0.4], [0.1, 0.2])
    assert (iv.estimate, iv.lo, iv.hi, iv.n) == pytest.approx(
        (want.estimate, want.lo, want.hi, want.n)) and iv.estimate == pytest.approx(0.2)
    with pytest.raises(ValueError):
        letter_aligned_diff(a, b[:, :2])


def test_interpolate_in_log_and_linear_x():
    x, y = np.array([10.0, 100.0]), np.array([0.0, 1.0])
    assert interpolate(x, y, math.sqrt(10 * 100), log_x=True) == pytest.approx(0.5)
    assert interpolate(x, y, 55.0, log_x=False) == pytest.approx(0.5)
    assert math.isnan(interpolate(x, y, 5.0, log_x=True))  # no extrapolation
    assert math.isnan(interpolate(x, y, 101.0, log_x=False))
    # unsorted points and NaNs are handled
    assert interpolate(np.array([100.0, math.nan, 10.0]), np.array([1.0, 5.0, 0.0]), 10.0,
                       log_x=True) == pytest.approx(0.0)


def _family(slope: float, offset: float, noise: float, seeds: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    pts = []
    for l0 in (10.0, 20.0, 40.0, 80.0, 160.0):
        x = l0 * np.exp(rng.normal(0, noise, seeds))
        pts.append(SweepPoint(tuple(x), tuple(offset + slope * np.log(x) +
                                              rng.normal(0, noise, seeds))))
    return pts


def test_matched_diff_known_curves():
    a, b = _family(0.1, 0.5, 0.0), _family(0.1, 0.3, 0.0)
    iv = matched_diff(a, b, 30.0, log_x=True)
    assert iv.estimate == pytest.approx(0.2) and iv.lo == pytest.approx(0.2)
    assert math.isnan(matched_diff(a, b, 500.0, log_x=True).estimate)  # outside the sweep
    # with noise: the interval widens but still excludes 0 for a real gap, not for none
    noisy = matched_diff(_family(0.1, 0.5, 0.02, seed=1), _family(0.1, 0.3, 0.02, seed=2), 30.0,
                         log_x=True, n_boot=500)
    assert noisy.excludes_zero and 0.1 < noisy.estimate < 0.3 and noisy.hi > noisy.lo
    null = matched_diff(_family(0.1, 0.3, 0.05, seed=3), _family(0.1, 0.3, 0.05, seed=4), 30.0,
                        log_x=True, n_boot=500)
    assert null.lo < 0 < null.hi
