"""The claims table (``tab:claims``): each claim of the original, our evidence with
95% intervals, and a verdict by ``CLAIMS_RULE``.

The evidence comes from the matched comparisons (``report.comparisons``: ATM minus
another family at TopK's L0 / explained variance), from the seed-pair stability
results and from the one-factor ablations. A verdict is one of "holds", "fails",
"no difference", "not testable here" (with the reason); the abstract quotes the
verdicts through ``claim/<key>/verdict`` numbers, so text and table agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from atm_repro import metrics
from atm_repro.config import Profile
from atm_repro.intervals import NAN_INTERVAL, Interval, diff_interval
from atm_repro.report.comparisons import Matched
from atm_repro.report.latex import Tex, booktabs_table, escape_latex
from atm_repro.report.provenance import Stamp

CLAIMS_RULE = (
    r"\emph{Rule.} ``Holds'': every difference the claim needs has a 95\% bootstrap "
    r"interval (over seeds) on ATM's side of zero; ``fails'': one has its interval on the "
    r"other side; ``no difference'': the intervals include zero; ``not testable here'': the "
    r"metric is not meaningful for the compared SAEs (absorption's health check: fewer than "
    r"20 letters kept or no first-letter latent) or a compared point has a single seed. "
    r"Differences are ATM minus the other family at TopK's $L_0$ (matched sparsity) unless "
    r"stated."
)


@dataclass(frozen=True)
class Claim:
    key: str  # number key part (``claim/<key>/verdict``)
    claim: str  # the original's claim, LaTeX
    evidence: str  # our evidence, LaTeX
    verdict: str


def _find(comparisons: list[Matched], other: str, metric: str, match: str = "L0") -> Matched | None:
    return next((c for c in comparisons if c.other == other and c.metric == metric
                 and c.match == match), None)


def _ev(c: Matched | None, what: str) -> str:
    if c is None:
        return f"{what}: n/a"
    raw = "" if c.meaningful else " (raw)"
    return f"{what}{raw} {c.diff.format()}"


def _combine(needed: list[Matched | None]) -> str:
    """The verdict of a claim that needs every comparison of ``needed`` in ATM's favour."""
    if any(c is None for c in needed):
        return "not testable here (not measured)"
    if not all(c.meaningful for c in needed):
        return "not testable here (absorption not meaningful)"
    verdicts = [c.verdict for c in needed]
    if any(v == "ATM worse" for v in verdicts):
        return "fails"
    if all(v == "ATM better" for v in verdicts):
        return "holds"
    if any(v in ("n/a", "no interval (1 seed)") for v in verdicts):
        return "not testable here (" + next(v for v in verdicts
                                             if v in ("n/a", "no interval (1 seed)")) + ")"
    return "no difference"


def _no_worse(c: Matched | None) -> str:
    """A "not worse than" claim: holds unless the interval is on the wrong side."""
    if c is None or not math.isfinite(c.diff.estimate):
        return "not testable here (not measured)"
    if not (math.isfinite(c.diff.lo) and math.isfinite(c.diff.hi)):
        return "not testable here (1 seed)"
    return "fails" if c.verdict == "ATM worse" else "holds"


def main_diff(table: pd.DataFrame, other: str, metric: str) -> Interval:
    """ATM minus ``other`` in ``metric`` at each one's main-set settings (not
    matched), over seeds."""
    main = table[table["group"] == "main"]
    if metric not in main:
        return NAN_INTERVAL
    return diff_interval(main.loc[main["name"] == "atm", metric],
                         main.loc[main["name"] == other, metric])


def stability_diff(table: pd.DataFrame, other: str = "topk",
                   metric: str = metrics.STABILITY_MAX_COS.id) -> Interval:
    """ATM minus ``other`` in seed-pair stability (each disjoint pair counted once)."""
    main = table[table["group"] == "main"]
    if metric not in main:
        return NAN_INTERVAL
    pairs = {n: main[main["name"] == n].sort_values("seed").iloc[0::2][metric].dropna()
             for n in ("atm", other)}
    return diff_interval(pairs["atm"], pairs[other])


FACTOR_TEX = {"beta": r"$\beta$", "c": "$c$", "r": "$r$"}


def factor_effect(table: pd.DataFrame, cfg: Profile, factor: str, metric: str) -> str:
    """``metric`` of ATM at the smallest and largest value of an ablated factor,
    with the number of seeds (evidence for the mechanism claim)."""
    at = table[(table["layer"] == cfg.train.layer) & (table["base"] == cfg.ablations.sae)
               & (table["param"] == factor)]
    if at.empty or metric not in at:
        return f"{factor}: n/a"
    numeric = at[at["value"].map(lambda v: not isinstance(v, str))]
    if numeric.empty:
        return f"{factor}: n/a"
    by_value = numeric.groupby("value")[metric].agg(["mean", "count"])
    lo, hi = by_value.index.min(), by_value.index.max()
    name = FACTOR_TEX.get(factor, escape_latex(factor))
    return (f"{name} {lo:g}$\\to${hi:g}: {by_value.loc[lo, 'mean']:.3f}$\\to$"
            f"{by_value.loc[hi, 'mean']:.3f} ({int(by_value['count'].min())} seed)")


def claims(cfg: Profile, table: pd.DataFrame, comparisons: list[Matched]) -> list[Claim]:
    """The five claims of the original, judged on our run."""
    full, frac = metrics.FULL_ABSORPTION.id, metrics.ABSORPTION_FRACTION.id
    ev, ce = metrics.EXPLAINED_VARIANCE.id, metrics.CE_LOSS_SCORE.id
    abs_needed = [_find(comparisons, o, m) for o in ("topk", "jumprelu") for m in (full, frac)]
    recon = _find(comparisons, "topk", ev)
    ce_main = main_diff(table, "topk", ce)
    none_ev, random_ev = _find(comparisons, "atm-none", ev), _find(comparisons, "atm-random", ev)
    none_abs = _find(comparisons, "atm-none", full)
    stab = stability_diff(table)
    stab_verdict = ("not testable here (no seed pairs)" if not math.isfinite(stab.estimate)
                    else "not testable here (1 pair)" if not math.isfinite(stab.lo)
                    else "fails" if stab.hi < 0 else "holds" if stab.lo > 0
                    else "no difference")
    mask_needed = [none_abs, _find(comparisons, "atm-random", full)]
    mask_verdict = _combine(mask_needed)
    if none_ev is not None and none_ev.verdict == "ATM worse":
        mask_verdict = ("fails (reconstruction); absorption "
                        + ("not testable" if mask_verdict.startswith("not testable")
                           else mask_verdict))
    return [
        Claim("absorption", "ATM absorbs far less than TopK and JumpReLU",
              "; ".join([_ev(abs_needed[0], "full rate vs TopK"),
                         _ev(abs_needed[2], "vs JumpReLU"),
                         _ev(abs_needed[1], "fraction vs TopK")]),
              _combine(abs_needed)),
        Claim("reconstruction", "ATM keeps good reconstruction",
              "; ".join([_ev(recon, "explained variance vs TopK"),
                         f"CE-loss score vs TopK at each one's own settings "
                         f"{ce_main.format()}"]),
              _no_worse(recon)),
        Claim("mask", "the importance mask causes the gain",
              "; ".join([_ev(none_ev, "explained variance vs no mask"),
                         _ev(random_ev, "vs random mask"),
                         _ev(none_abs, "full rate vs no mask")]),
              mask_verdict),
        Claim("stability", "ATM trains stable features",
              f"best-match decoder cosine vs TopK {stab.format()} (disjoint seed pairs)",
              stab_verdict),
        _mechanism(cfg, table, ev),
    ]


def _mechanism(cfg: Profile, table: pd.DataFrame, ev: str) -> Claim:
    """The mechanism claim from the factor ablations of notebook 03; without any
    ablation of beta, c or r there is nothing to judge, and it says so."""
    factors = [f for f in ("r", "c", "beta") if f in cfg.ablations.factors]
    if not factors:
        return Claim("mechanism", "$\\beta$, $c$, $r$ shape the result",
                     "no ablation of $\\beta$, $c$ or $r$ in this profile (ablations.factors)",
                     "not testable here (not ablated)")
    return Claim("mechanism", "$\\beta$, $c$, $r$ shape the result",
                 "; ".join(factor_effect(table, cfg, f, ev) for f in factors)
                 + " (explained variance)",
                 "not testable here (1 seed per value)"
                 if not _multi_seed(cfg, factors) else "see ablations")


def _multi_seed(cfg: Profile, factors) -> bool:
    abl = cfg.ablations
    return all(len(abl.factor_seeds.get(f, abl.seeds)) > 1 for f in factors if f in abl.factors)


def claims_table(cfg: Profile, table: pd.DataFrame, comparisons: list[Matched],
                 stamp: Stamp) -> str:
    def box(text: str, width: float) -> Tex:
        return Tex(f"\\parbox[t]{{{width}\\linewidth}}{{\\raggedright {text}}}")

    frame = pd.DataFrame([{"claim": box(c.claim, 0.2), "evidence": box(c.evidence, 0.48),
                           "verdict": box(escape_latex(c.verdict), 0.2)}
                          for c in claims(cfg, table, comparisons)])
    return booktabs_table(
        frame, {"claim": "claim of the original", "evidence": "our evidence [95\\% CI]",
                "verdict": "verdict"},
        stamp=stamp, label="tab:claims", tex_columns=("claim", "evidence", "verdict"),
        align="lll",
        caption="Each claim of the original, the evidence of this run and its verdict. "
                "Differences are ATM minus the other SAE; ``(raw)'': absorption values the "
                "metric's health check rejects, shown for the record.",
        notes=CLAIMS_RULE)


def claim_numbers(cfg: Profile, table: pd.DataFrame, comparisons: list[Matched]) -> dict:
    """``claim/<key>/verdict`` for the abstract, and the stability difference."""
    out = {f"claim/{c.key}/verdict": c.verdict for c in claims(cfg, table, comparisons)}
    stab = stability_diff(table)
    for part, value in (("diff", stab.estimate), ("lo", stab.lo), ("hi", stab.hi)):
        if math.isfinite(value):
            out[f"claim/stability/{part}"] = value
    return out
