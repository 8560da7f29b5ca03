"""Intervals over seeds, and family-vs-family differences at matched L0 or matched
explained variance.

Seeds are the independent units: each is a draw of the training randomness, and
two families share nothing but the data. With 2-10 seeds a percentile bootstrap
is far too narrow (three seed means have at most ten distinct resampled means),
so a mean over seeds gets a Student-t interval and a difference of two families'
means a Welch t interval (unequal variances, Welch-Satterthwaite degrees of
freedom). A metric that is a mean over letters is compared on the letters both
sides score: each seed's mean over those letters, then Welch.

Matched comparisons along sparsity sweeps: a family is a curve of sweep points
(one sparsity setting each, several seeds). There the interval is a percentile
bootstrap with a fixed seed: a replicate resamples the seeds of every point,
takes the point means, and reads each family's metric at the target x by linear
interpolation (in log L0 for L0, linearly for explained variance); a target
outside a family's measured range gives NaN (no extrapolation). Two single
points (families trained at the target by construction) fall back to Welch.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

N_BOOT = 4000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval; ``n`` is the number of seeds (for a
    difference: of the smaller side)."""

    estimate: float
    lo: float
    hi: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """The verdict rule: a difference "holds" only when its interval excludes 0."""
        return bool(self.lo > 0 or self.hi < 0)

    def format(self, digits: int = 3, n: bool = False) -> str:
        """``estimate [lo, hi]``; with ``n``, the seed count beside it (a reader
        judges an interval by its n)."""
        if not math.isfinite(self.estimate):
            return "n/a"
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return f"{self.estimate:.{digits}f}" + (f" (n = {self.n})" if n else "")
        return (f"{self.estimate:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"
                + (f" (n = {self.n})" if n else ""))


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan, 0)


@contextlib.contextmanager
def _nan_quiet():
    """A NaN-aware mean of an all-NaN slice is NaN here by design: no warning."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _clean(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def _interval(estimate: float, reps: np.ndarray, n: int, level: float) -> Interval:
    reps = reps[np.isfinite(reps)]
    if n < 2 or reps.size == 0:
        return Interval(float(estimate), math.nan, math.nan, n)
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(lo), float(hi), n)


def _t_interval(estimate: float, se: float, df: float, n: int, level: float) -> Interval:
    if n < 2 or not math.isfinite(se):
        return Interval(float(estimate), math.nan, math.nan, n)
    half = 0.0 if se == 0 else float(stats.t.ppf((1 + level) / 2, df)) * se
    return Interval(float(estimate), float(estimate - half), float(estimate + half), n)


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean over seeds with its Student-t interval (NaN values are dropped: an
    unscorable SAE does not count; with < 2 values the interval is NaN)."""
    a = _clean(values)
    if a.size == 0:
        return NAN_INTERVAL
    se = a.std(ddof=1) / math.sqrt(a.size) if a.size > 1 else math.nan
    return _t_interval(a.mean(), se, a.size - 1, a.size, level)


def diff_interval(a_values: Sequence[float], b_values: Sequence[float],
                  level: float = LEVEL) -> Interval:
    """mean(a) - mean(b) over independent seeds, with a Welch t interval; NaN
    interval when either side has fewer than 2 values."""
    a, b = _clean(a_values), _clean(b_values)
    if a.size == 0 or b.size == 0:
        return NAN_INTERVAL
    n = min(a.size, b.size)
    if n < 2:
        return Interval(float(a.mean() - b.mean()), math.nan, math.nan, n)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if se else 1.0
    return _t_interval(a.mean() - b.mean(), se, df, n, level)


def letter_aligned_diff(a_SL: np.ndarray, b_TL: np.ndarray, level: float = LEVEL) -> Interval:
    """Difference of a per-letter mean between two families (rows: seeds, columns:
    the same letters on both sides, NaN where a letter was not scored): each seed's
    mean over the letters both families score (finite after averaging over seeds),
    then ``diff_interval`` over the seeds. A letter one side never scores is left
    out on both, so the two means cover the same letters."""
    a, b = np.asarray(a_SL, np.float64), np.asarray(b_TL, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need [seeds, letters] arrays over the same letters, got "
                         f"{a.shape} and {b.shape}")
    with _nan_quiet():
        keep = np.isfinite(np.nanmean(a, 0)) & np.isfinite(np.nanmean(b, 0))
        if not keep.any():
            return NAN_INTERVAL
        return diff_interval(np.nanmean(a[:, keep], 1), np.nanmean(b[:, keep], 1), level)


@dataclass(frozen=True)
class SweepPoint:
    """One sparsity setting of a family: per-seed x (L0 or explained variance) and y."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or not self.x:
            raise ValueError("a sweep point needs one x and one y per seed (>= 1 seed)")


def interpolate(x_points: np.ndarray, y_points: np.ndarray, x0: float, log_x: bool) -> float:
    """y at x0, linear between the neighbouring points (in log x if ``log_x``); NaN
    outside [min x, max x] or with fewer than one finite point."""
    ok = np.isfinite(x_points) & np.isfinite(y_points)
    if log_x:
        ok &= x_points > 0
    xs, ys = x_points[ok], y_points[ok]
    if xs.size == 0:
        return math.nan
    if log_x:
        if x0 <= 0:
            return math.nan
        xs, x0 = np.log(xs), math.log(x0)
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    if x0 < xs[0] - 1e-12 or x0 > xs[-1] + 1e-12:
        return math.nan
    return float(np.interp(x0, xs, ys))


def _curve_means(points: Sequence[SweepPoint]) -> tuple[np.ndarray, np.ndarray]:
    with _nan_quiet():
        x = np.array([np.nanmean(p.x) for p in points])
        y = np.array([np.nanmean(p.y) for p in points])
    return x, y


def _curve_replicates(points: Sequence[SweepPoint], x0: float, log_x: bool,
                      rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """[n_boot] values of one curve at x0, each from point means over resampled seeds."""
    xs, ys = [], []
    for p in points:
        px, py = np.asarray(p.x, np.float64), np.asarray(p.y, np.float64)
        idx = rng.integers(0, len(px), size=(n_boot, len(px)))
        with _nan_quiet():
            xs.append(np.nanmean(px[idx], 1))
            ys.append(np.nanmean(py[idx], 1))
    xs_BP, ys_BP = np.stack(xs, 1), np.stack(ys, 1)
    return np.array([interpolate(x, y, x0, log_x) for x, y in zip(xs_BP, ys_BP)])


def matched_diff(a: Sequence[SweepPoint], b: Sequence[SweepPoint], x0: float, log_x: bool,
                 n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED) -> Interval:
    """y_a(x0) - y_b(x0), each family's curve interpolated at x0, with a bootstrap
    over the seeds of every sweep point; two single points at x0 get Welch's
    interval (``diff_interval``); NaN when x0 lies outside either curve."""
    est = (interpolate(*_curve_means(a), x0, log_x) - interpolate(*_curve_means(b), x0, log_x))
    if not math.isfinite(est):
        return NAN_INTERVAL
    if len(a) == 1 and len(b) == 1:
        return diff_interval(a[0].y, b[0].y, level)
    rng = np.random.default_rng(seed)
    reps = _curve_replicates(a, x0, log_x, rng, n_boot) - _curve_replicates(b, x0, log_x, rng,
                                                                             n_boot)
    n = min(min(len(p.x) for p in a), min(len(p.x) for p in b))
    return _interval(est, reps, n, level)
