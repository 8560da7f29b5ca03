"""Bootstrap intervals and matched comparisons: known answers on toy data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atm_repro.intervals import (
    Interval,
    SweepPoint,
    diff_interval,
    interpolate,
    matched_diff,
    mean_interval,
    paired_letter_diff,
)


def test_mean_interval_known_cases():
    iv = mean_interval([0.3, 0.3, 0.3])
    assert (iv.estimate, iv.lo, iv.hi, iv.n) == pytest.approx((0.3, 0.3, 0.3, 3))
    iv = mean_interval([0.1, 0.2, math.nan, 0.3, 0.4, 0.5])  # NaN (unscorable) dropped
    assert iv.n == 5 and iv.estimate == pytest.approx(0.3)
    assert 0.1 < iv.lo < 0.3 < iv.hi < 0.5
    single = mean_interval([0.7])
    assert single.estimate == 0.7 and math.isnan(single.lo) and single.format() == "0.700"
    assert mean_interval([math.nan]).format() == "n/a"
    assert mean_interval([1.0, 2.0]) == mean_interval([1.0, 2.0])  # seeded: same answer


def test_mean_interval_covers_the_truth_about_as_often_as_it_says():
    rng = np.random.default_rng(1)
    covered = 0
    for i in range(300):
        iv = mean_interval(rng.normal(2.0, 1.0, 8), n_boot=1000, seed=i)
        covered += iv.lo <= 2.0 <= iv.hi
    assert 0.85 <= covered / 300 <= 0.99  # percentile bootstrap, n = 8


def test_diff_interval_and_the_verdict_rule():
    a, b = [1.0, 1.1, 0.9, 1.05, 0.95], [0.0, 0.1, -0.1, 0.05, -0.05]
    iv = diff_interval(a, b)
    assert iv.estimate == pytest.approx(1.0) and iv.excludes_zero and iv.lo > 0.8
    same = diff_interval(a, list(reversed(a)))
    assert same.estimate == pytest.approx(0.0) and not same.excludes_zero
    assert not Interval(0.5, -0.1, 1.0, 5).excludes_zero
    assert Interval(-0.5, -1, -0.1, 5).excludes_zero


def test_paired_letters_beats_unpaired_when_letters_vary_together():
    rng = np.random.default_rng(0)
    base_L = rng.uniform(0, 1, 20)  # letters differ a lot, identically for both families
    a = base_L + 0.05 + rng.normal(0, 0.01, (5, 20))
    b = base_L + rng.normal(0, 0.01, (5, 20))
    paired = paired_letter_diff(a, b)
    assert paired.estimate == pytest.approx(0.05, abs=0.01) and paired.excludes_zero
    unpaired = diff_interval(a.ravel(), b.ravel())  # letters as if independent draws
    assert (paired.hi - paired.lo) < 0.3 * (unpaired.hi - unpaired.lo)
    a[:, 3] = np.nan  # a letter unscored on one side is left out, not zero
    assert paired_letter_diff(a, b).estimate == pytest.approx(
        float(np.mean(np.delete(a.mean(0) - b.mean(0), 3))))
    with pytest.raises(ValueError):
        paired_letter_diff(a, b[:, :5])


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
