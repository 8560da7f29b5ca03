"""One look for every figure: each SAE family keeps one colour, marker and label
across all figures, figures are sized for the page (drawn at the text width, so
printed text is the size set here, >= 7 pt), and log axes show plain numbers.

A variant's look is registered with it (``saes.registry``); the controls here
are spec names that are a variant plus settings, drawn apart from it. Colours
are the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies) and, beyond its eight, Paul Tol's; ATM and its two controls are
told apart by colour as well as marker (a test bounds every pair of the
canonical families' colours in CIE Lab).
"""

from __future__ import annotations

import functools
import math

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

from atm_repro.saes.registry import INFO, PlotStyle

TEXT_WIDTH = 6.5  # inches: the paper's text width (letter paper, 1 in margins)
MAX_WIDTH = 7.5  # no figure is wider than this (a test checks it)

RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 9,
    "axes.spines.top": False, "axes.spines.right": False, "lines.markersize": 4,
    "errorbar.capsize": 2, "savefig.bbox": None,
}


FamilyStyle = PlotStyle  # a family's label, colour and marker (the registry's type)

# Spec names of the profiles that are a variant plus settings (ATM's two mask
# controls, ATM at the original's lambda, the short breadth runs; BatchTopK /
# Matryoshka on the token-masked cache) with their own look.
CONTROLS: dict[str, FamilyStyle] = {
    "atm-random": FamilyStyle("ATM, random mask", "#332288", "v"),
    "atm-none": FamilyStyle("ATM, no mask", "#999933", "^"),
    "masked-reg": FamilyStyle("masked reg.", "#999999", "h"),
    "atm-paper": FamilyStyle("ATM, paper's λ", "#882255", "d"),
    # the breadth runs (a budget of their own): darker shades of their families
    "atm-short": FamilyStyle("ATM (short run)", "#004C7A", "o"),
    "topk-short": FamilyStyle("TopK (short run)", "#8C3B00", "s"),
}
OTHER = FamilyStyle("", "#7F7F7F", ".")  # a spec name neither table knows

PARAM_LABELS = {
    "l1_coefficient": "L1 coefficient λ", "l0_coefficient": "L0 coefficient", "k": "k",
    "beta": "EMA decay β", "c": "threshold c", "r": "mask rate r",
    "ema_start": "EMA start", "masked_g": "g of masked latents",
    "width": "latents", "tokens": "training tokens (x canonical)",
}


def families() -> dict[str, FamilyStyle]:
    """Every known family's style: the registered variants', then the controls'."""
    return {**{name: info.style for name, info in INFO.items()}, **CONTROLS}


def family(name: str) -> FamilyStyle:
    """The style of an SAE family (a spec name of the profiles); unknown names
    get a neutral grey and their own name as label."""
    return families().get(name, FamilyStyle(name, OTHER.color, OTHER.marker))


def label(name: str) -> str:
    return family(name).label


def param_label(param: str) -> str:
    return PARAM_LABELS.get(param, param.replace("_", " "))


def styled(draw):
    """Run a figure function under ``RC`` (no global state is changed)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(RC):
            return draw(*args, **kwargs)
    return wrapper


def figure(nrows: int = 1, ncols: int = 1, height: float = 2.4, width: float = TEXT_WIDTH,
           **kwargs):
    """``plt.subplots`` at a page width (``TEXT_WIDTH`` unless narrower)."""
    return plt.subplots(nrows, ncols, figsize=(min(width, MAX_WIDTH), height), **kwargs)


def log_axis(ax, axis: str = "x", ticks=None) -> None:
    """A log axis with plain tick labels (10, 100, 1000 rather than 10^1 ...); at
    ``ticks`` when given (e.g. 1024 ... 8192 latents), else at the powers of ten
    (and 3x, or 2x and 5x, on an axis that spans fewer decades). Call it after
    drawing: the span decides."""
    getattr(ax, f"set_{axis}scale")("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    if ticks is not None:
        target.set_major_locator(FixedLocator(list(ticks)))
    else:  # denser labels on a short axis, so that it has at least two
        lo, hi = (ax.get_xlim() if axis == "x" else ax.get_ylim())
        decades = math.log10(hi / lo) if lo > 0 and hi > lo else 3.0
        subs = (1.0, 2.0, 5.0) if decades <= 1.2 else (1.0, 3.0) if decades <= 2.2 else (1.0,)
        target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def raw_handle():
    """A legend entry for the drawing of raw absorption values (not meaningful)."""
    return Line2D([], [], color="0.45", ls="--", marker="o", markerfacecolor="none",
                  label="raw absorption, not meaningful")


def legend(ax_or_fig, **kwargs):
    """A frameless legend (on an axis, or below a whole figure)."""
    kwargs.setdefault("frameon", False)
    return ax_or_fig.legend(**kwargs)
