"""ATM against every other family and against its own controls, at matched L0 and
at matched explained variance, with 95% intervals over seeds (Welch t; a bootstrap
along sparsity sweeps).

A family is the main-set spec of that name plus its sparsity sweep
(``ablations.sparsity_sweeps``) at the main layer: one curve of points, each
point a setting with its seeds. Both curves are read at the target by
interpolation (``atm_repro.intervals.matched_diff``). The targets are TopK's
operating point: its main set's mean L0 and mean explained variance, so the
question is "what does ATM give where TopK runs?". A family with one setting (no
sweep: the canonical profile sets each family's sparsity so that its L0 is
TopK's) stands at the L0 target when its mean L0 lies within ``L0_TOLERANCE`` of
it (matched by construction); otherwise it is not matched ("n/a").

Who is compared: ``METHOD`` (ATM at the matched setting) against every other
main-set spec trained at the profile's full budget, except ATM at the original's
lambda (``paper_setting``), which the claims table sets beside TopK at each one's
own settings (the original's comparison).

``MATCHED_RULE`` turns a difference into a verdict; it is printed beside the
table. Absorption where the metric is not meaningful (``evals.absorption.health``)
is compared on its raw values for the reader, with the verdict "not meaningful".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from atm_repro import metrics
from atm_repro.config import Profile
from atm_repro.intervals import (
    NAN_INTERVAL,
    Interval,
    SweepPoint,
    diff_interval,
    letter_aligned_diff,
    matched_diff,
    mean_interval,
)
from atm_repro.saes.atm import ATMConfig

METHOD = "atm"
REFERENCE = "topk"  # whose operating point sets the targets
COMPARED_METRICS = (metrics.FULL_ABSORPTION, metrics.ABSORPTION_FRACTION,
                    metrics.EXPLAINED_VARIANCE, metrics.CE_LOSS_SCORE)
MEANINGFUL = metrics.MEANINGFUL.id
# (target, the column matched, whether curves are interpolated in its log)
MATCHES = (("L0", metrics.L0.id, True), ("EV", metrics.EXPLAINED_VARIANCE.id, False))
MATCH_COLUMNS = {match: col for match, col, _ in MATCHES}
L0_TOLERANCE = 0.15  # a one-setting family within 15% of the L0 target is matched

MATCHED_RULE = (
    r"\emph{Rule.} Each entry is ATM minus the other family (or ATM's control), both "
    r"read off their sparsity curves at the same $L_0$ (interpolated in $\log L_0$) or the "
    r"same explained variance (linearly), with a 95\% percentile-bootstrap interval over "
    r"the seeds of every curve point; a family with a single setting counts as at the "
    r"target $L_0$ when its mean $L_0$ lies within 15\% of it, and two such families get a "
    r"Welch $t$ interval over their seeds; at the profile's own settings (each family at "
    r"its main point, not matched), absorption is compared on the letters both sides "
    r"score and every metric gets a Welch $t$ interval over seeds. "
    r"``ATM better'' / ``ATM worse'': the interval excludes 0; ``no difference'': it "
    r"includes 0; ``no interval'': a curve point has one seed; ``n/a'': the target lies "
    r"outside a curve (no extrapolation) or the metric is not measured along it (the "
    r"CE-loss score needs the costly splice and is measured for the main set only); "
    r"``not meaningful'': the absorption metric fails its health check on an SAE of "
    r"either curve, and the numbers shown are the raw measures."
)


# A verdict as a table cell shows it beside the difference
SHORT_VERDICT = {"ATM better": "better", "ATM worse": "worse", "no difference": "no diff.",
                 "not meaningful": "n.m.", "no interval (1 seed)": "1 seed", "n/a": "", "": ""}


@dataclass(frozen=True)
class Matched:
    """One comparison: ATM minus ``other`` in ``metric`` at ``match`` = ``target``."""

    other: str
    metric: str
    match: str  # "L0" | "EV"
    target: float
    diff: Interval
    meaningful: bool
    better: str  # "lower" | "higher"

    @property
    def verdict(self) -> str:
        if not self.meaningful:
            return "not meaningful"
        if not math.isfinite(self.diff.estimate):
            return "n/a"
        if not (math.isfinite(self.diff.lo) and math.isfinite(self.diff.hi)):
            return "no interval (1 seed)"
        if not self.diff.excludes_zero:
            return "no difference"
        atm_lower = self.diff.estimate < 0
        return "ATM better" if atm_lower == (self.better == "lower") else "ATM worse"


def family_rows(cfg: Profile, table: pd.DataFrame, family: str) -> pd.DataFrame:
    """The per-SAE rows (``results.per_sae``) of ``family`` at the main layer: its
    main-set runs and the runs of its sparsity sweep."""
    at = table[table["layer"] == cfg.train.layer]
    sweep = cfg.ablations.sparsity_sweeps.get(family)
    main = (at["group"] == "main") & (at["name"] == family)
    swept = ((at["group"] == "ablation") & (at["base"] == family)
             & (at["param"] == (sweep.param if sweep else None)))
    return at[main | swept]


def _column(rows: pd.DataFrame, metric: metrics.Metric) -> tuple[str, bool]:
    """The column to read and whether it is meaningful: absorption measures fall
    back to their raw values where any SAE's metric is not meaningful."""
    if metric.eval != metrics.ABSORPTION:
        return metric.id, True
    meaningful = MEANINGFUL in rows and bool((rows[MEANINGFUL] == 1).all())
    if not meaningful and metric.raw_id in rows:
        return metric.raw_id, False
    return metric.id, meaningful


def _curve(rows: pd.DataFrame, x: str, y: str, match: str, target: float) -> list[SweepPoint]:
    """The family's points (x, y per seed); a single setting within ``L0_TOLERANCE``
    of the L0 target is moved onto it (matched by construction)."""
    if x not in rows or y not in rows:
        return []
    points = [SweepPoint(tuple(pts[x]), tuple(pts[y]))
              for _, pts in rows.groupby("name", sort=False)]
    if len(points) == 1 and match == "L0" and math.isfinite(target):
        (p,) = points
        if abs(float(np.nanmean(p.x)) / target - 1) <= L0_TOLERANCE:
            points = [SweepPoint((target,) * len(p.x), p.y)]
    return points


def targets(cfg: Profile, table: pd.DataFrame) -> dict[str, float]:
    """L0 and explained variance of the reference family's main set (means)."""
    ref = family_rows(cfg, table, REFERENCE)
    ref = ref[ref["group"] == "main"]
    return {match: float(ref[col].mean()) if col in ref else math.nan
            for match, col, _ in MATCHES}


def full_budget(cfg: Profile, name: str) -> bool:
    """Whether main-set spec ``name`` trains on the profile's ``train.tokens`` (not a
    breadth run with a budget of its own)."""
    return cfg.train.for_spec(cfg.train.saes[name]).tokens == cfg.train.tokens


def paper_setting(cfg: Profile) -> str | None:
    """The main-set spec that is ATM as the original ran it: the importance mask at
    the original's lambda (``ATMConfig``'s default), at the profile's full budget."""
    return next((n for n, s in cfg.train.saes.items()
                 if s.variant == "atm" and full_budget(cfg, n) and not s.token_masked
                 and s.params.get("mask_mode", ATMConfig.mask_mode) == ATMConfig.mask_mode
                 and s.params.get("l1_coefficient", ATMConfig.l1_coefficient)
                 == ATMConfig.l1_coefficient), None)


def others(cfg: Profile) -> list[str]:
    """Every main-set family compared with ATM: the other variants, then ATM's
    controls (same variant, another mask mode). Left out: token-masked specs, specs
    with a budget of their own (breadth runs) and ATM at the original's lambda when
    it is not ``METHOD`` itself (``paper_setting``)."""
    specs = cfg.train.saes
    if METHOD not in specs:
        return []
    paper = paper_setting(cfg)
    rest = [n for n, s in specs.items() if n not in (METHOD, paper) and not s.token_masked
            and full_budget(cfg, n)]
    return ([n for n in rest if specs[n].variant != "atm"]
            + [n for n in rest if specs[n].variant == "atm"])


def matched_comparisons(cfg: Profile, table: pd.DataFrame) -> list[Matched]:
    """ATM minus each other family, every compared metric, at both targets."""
    out = []
    goal = targets(cfg, table)
    atm = family_rows(cfg, table, METHOD)
    for other in others(cfg):
        rows = family_rows(cfg, table, other)
        for metric in COMPARED_METRICS:
            col_a, ok_a = _column(atm, metric)
            col_b, ok_b = _column(rows, metric)
            for match, x, log_x in MATCHES:
                a = _curve(atm, x, col_a, match, goal[match])
                b = _curve(rows, x, col_b, match, goal[match])
                diff = (matched_diff(a, b, goal[match], log_x)
                        if a and b and math.isfinite(goal[match]) else NAN_INTERVAL)
                out.append(Matched(other, metric.id, match, goal[match], diff, ok_a and ok_b,
                                   metric.direction))
    return out


def main_setting_comparisons(cfg: Profile, table: pd.DataFrame,
                             letters: pd.DataFrame) -> list[Matched]:
    """ATM minus each other family at their main-set settings (not matched): per-letter
    absorption paired by letter (``letters``: ``results.absorption_by_letter``), the
    other metrics unpaired over seeds."""
    at = table[(table["group"] == "main") & (table["layer"] == cfg.train.layer)]
    out = []
    for other in others(cfg):
        pair = at[at["name"].isin([METHOD, other])]
        for metric in COMPARED_METRICS:
            if metric.eval == metrics.ABSORPTION:
                ok = MEANINGFUL in pair and bool((pair[MEANINGFUL] == 1).all())
                rate = ("full_absorption_rate" if metric == metrics.FULL_ABSORPTION
                        else "mean_absorption_fraction")
                grids = [letters[letters["name"] == n].pivot_table(
                    index="seed", columns="letter", values=rate, aggfunc="mean")
                    for n in (METHOD, other)]
                common = sorted(set(grids[0].columns) | set(grids[1].columns))
                diff = (letter_aligned_diff(*(g.reindex(columns=common).to_numpy()
                                             for g in grids))
                        if all(len(g) for g in grids) else NAN_INTERVAL)
            else:
                ok = True
                diff = (diff_interval(at.loc[at["name"] == METHOD, metric.id],
                                      at.loc[at["name"] == other, metric.id])
                        if metric.id in at else NAN_INTERVAL)
            out.append(Matched(other, metric.id, "main", math.nan, diff, ok, metric.direction))
    return out


def matched_frame(comparisons: list[Matched]) -> pd.DataFrame:
    """One row per (other family, metric); per target (``L0``, ``EV``, ``main``):
    difference [interval] and verdict columns."""
    labels = {m.id: m.label for m in COMPARED_METRICS}
    rows: dict[tuple[str, str], dict] = {}
    for c in comparisons:
        row = rows.setdefault((c.other, c.metric), {"other": c.other,
                                                    "metric": labels[c.metric]})
        if MATCH_COLUMNS.get(c.match) == c.metric:  # equal by construction
            row[f"{c.match}_diff"], row[f"{c.match}_verdict"] = "(matched)", ""
        else:
            row[f"{c.match}_diff"] = c.diff.format(n=True)
            row[f"{c.match}_verdict"] = c.verdict
    return pd.DataFrame(list(rows.values()))


def matched_numbers(comparisons: list[Matched], goal: dict[str, float]) -> dict[str, float]:
    """For the text: ``matched/<other>/<metric>/<L0|EV>/{diff,lo,hi}`` and the targets."""
    out = {f"matched/target/{m}": v for m, v in goal.items() if math.isfinite(v)}
    for c in comparisons:
        key = f"matched/{c.other}/{c.metric.split('/')[-1]}/{c.match}"
        for part, value in (("diff", c.diff.estimate), ("lo", c.diff.lo), ("hi", c.diff.hi)):
            if math.isfinite(value):
                out[f"{key}/{part}"] = value
    return out


def seed_interval_cells(runs: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """``mean ± h`` per column over the rows (seeds) of one SAE name, h half the width
    of the 95% Student-t interval at the mean's decimals (``< 0.001`` when it rounds to
    0 there); a single seed shows its value, none "n/a"."""
    out = {}
    for col in columns:
        values = runs[col].to_numpy(dtype=float) if col in runs else np.array([])
        iv = mean_interval(values)
        if not math.isfinite(iv.estimate):
            out[col] = "n/a"
        elif not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
            out[col] = _fmt(iv.estimate)
        else:
            mean = _fmt(iv.estimate)
            decimals = len(mean.partition(".")[2])
            half = round((iv.hi - iv.lo) / 2, decimals)
            out[col] = (f"{mean} ± {half:,.{decimals}f}" if half > 0
                        else f"{mean} ± < {10.0 ** -decimals:.{decimals}f}")
    return out


def _fmt(value: float) -> str:
    """Three significant digits, no exponent for the magnitudes in these tables."""
    if value == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{value:,.{digits}f}"
