"""LaTeX rendering: fixed number formatting, booktabs tables, number macros.

Bytes depend only on the inputs (fixed order, fixed formatting), so an
unchanged rerun renders identical files. Plain text is escaped; ``Tex`` is
LaTeX already and passes through.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd

from atm_repro.report.provenance import Stamp, with_stamp

MISSING_CELL = "--"  # a table cell with no value (en dash)
MISSING_NUMBER = "n/a"  # a quoted number with no value


class Tex(str):
    """A string that is already LaTeX: written as is, never escaped."""



# --------------------------------------------------------------------------- formatting

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
}
_LATEX_SPECIALS_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIALS))


def escape_latex(text: str) -> Tex:
    """Plain text -> LaTeX that prints it (``Tex`` input is returned unchanged)."""
    if isinstance(text, Tex):
        return text
    return Tex(_LATEX_SPECIALS_RE.sub(lambda m: _LATEX_SPECIALS[m.group()], str(text)))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_missing(value: Any) -> bool:
    return (value is None or value is pd.NA
            or (_is_number(value) and not math.isfinite(float(value))))


def _tex_number(text: str) -> Tex:
    """A formatted number as LaTeX that works in text and math mode: a real minus
    sign, braced thousands separators (no math spacing), an escaped percent."""
    text = text.replace(",", "{,}").replace("%", r"\%")
    return Tex(r"\ensuremath{-}" + text[1:] if text.startswith("-") else text)


def format_number(value: Any, sig: int = 3) -> Tex:
    """Fixed formatting for a number in LaTeX text: integers with thousands
    separators; floats with ``sig`` significant digits in positional notation
    (trailing zeros kept, so precision shows; values >= 10^sig rounded to an
    integer); None / NaN -> ``MISSING_CELL``."""
    if is_missing(value):
        return Tex(MISSING_CELL)
    if isinstance(value, numbers.Integral):
        return _tex_number(f"{int(value):,}")
    x = float(value)
    if x == 0.0:
        return Tex("0")
    # the magnitude after rounding, so 0.9996 prints 1.00, not 1.000
    magnitude = math.floor(math.log10(abs(float(f"{x:.{sig - 1}e}"))))
    decimals = max(0, sig - 1 - magnitude)
    return _tex_number(f"{x:,.{decimals}f}")


Fmt = str | Callable[[Any], str] | None


def format_cell(value: Any, fmt: Fmt = None) -> Tex:
    """One table cell: ``fmt`` is a format spec (".3f", ",.0f", ".1%"), a callable
    returning plain text, or None (``format_number``). Strings are escaped;
    missing numbers become ``MISSING_CELL``."""
    if isinstance(value, str):
        return escape_latex(value)
    if is_missing(value):
        return Tex(MISSING_CELL)
    if fmt is None:
        return format_number(value)
    if callable(fmt):
        return escape_latex(fmt(value))
    return _tex_number(format(value, fmt))


# --------------------------------------------------------------------------- tables


def booktabs_table(df: pd.DataFrame, columns: dict[str, str], caption: str, label: str,
                   stamp: Stamp, fmt: dict[str, Fmt] | None = None,
                   best: dict[str, Literal["max", "min"]] | None = None,
                   notes: str | None = None, tex_columns: tuple[str, ...] = (),
                   align: str | None = None, groups: list[tuple[str, int]] | None = None,
                   placement: str = "htbp") -> str:
    """A ``table`` float holding a booktabs tabular of ``df``'s ``columns``.

    ``columns`` maps DataFrame columns to headers, in order; headers, ``caption``
    and ``notes`` (set small under the tabular) are LaTeX, cells are data
    (strings escaped, numbers formatted by ``fmt[col]``, see ``format_cell``)
    except in ``tex_columns``, whose strings are LaTeX already. Columns whose
    values are all numbers are right-aligned unless ``align`` (one letter per
    column) says otherwise. ``best[col]`` bolds the cells that, as printed,
    equal the column's max or min. ``groups`` adds a header row above the
    column headers: (LaTeX label, number of columns) in order, spanning all
    columns, each non-empty label ruled below. Rows keep ``df``'s order; a
    tabular wider than the text is scaled down to fit, and one that would need a
    scale under 0.8 (type under 8 pt) says so in the LaTeX log.
    """
    fmt, best = fmt or {}, best or {}
    missing = [c for c in [*columns, *fmt, *best, *tex_columns] if c not in df.columns]
    if missing:
        raise KeyError(f"column(s) {missing} not in the DataFrame (has {list(df.columns)})")
    bad = {c: b for c, b in best.items() if b not in ("max", "min")}
    if bad:
        raise ValueError(f"best must be 'max' or 'min', got {bad}")
    if align is not None and (len(align) != len(columns) or set(align) - set("lcr")):
        raise ValueError(f"align {align!r} needs one of l/c/r per column ({len(columns)})")
    if groups is not None and sum(n for _, n in groups) != len(columns):
        raise ValueError(f"groups {groups} must span the {len(columns)} columns exactly")

    body: dict[str, list[Tex]] = {}
    auto_align = ""
    for col in columns:
        values = list(df[col])
        cells = [Tex(v) if col in tex_columns and isinstance(v, str)
                 else format_cell(v, fmt.get(col)) for v in values]
        numeric = [v for v in values if _is_number(v) and not is_missing(v)]
        if col in best and numeric:
            target = max(numeric) if best[col] == "max" else min(numeric)
            shown = format_cell(target, fmt.get(col))
            cells = [Tex(rf"\textbf{{{c}}}") if c == shown and _is_number(v) else c
                     for c, v in zip(cells, values)]
        body[col] = cells
        all_numeric = all(_is_number(v) or is_missing(v) for v in values)
        auto_align += "r" if all_numeric and numeric else "l"

    rows = [" & ".join(body[c][i] for c in columns) + r" \\" for i in range(len(df))]
    lines = [
        rf"\begin{{table}}[{placement}]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\small",
        r"\setlength{\tabcolsep}{4pt}",  # 2/3 of the default: wide tables keep 8 pt type
        r"\setbox0=\hbox{%",
        rf"\begin{{tabular}}{{{align or auto_align}}}",
        r"\toprule",
        *_group_header(groups or []),
        " & ".join(columns.values()) + r" \\",
        r"\midrule",
        *rows,
        r"\bottomrule",
        r"\end{tabular}}%",
        r"\leavevmode\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\copy0}\else\copy0\fi",
        # type below 8 pt (a \small tabular scaled under 0.8) is logged for the tests
        rf"\ifdim0.8\wd0>\linewidth\PackageWarning{{atm_repro}}{{{label} scaled below 0.8}}\fi",
    ]
    if notes:
        lines += [r"\par\smallskip", rf"\parbox{{\linewidth}}{{\footnotesize {notes}}}"]
    lines.append(r"\end{table}")
    return with_stamp(stamp, lines)


def missing_table(reason: str, caption: str, label: str, stamp: Stamp,
                  placement: str = "htbp") -> str:
    """The float of a table whose input the profile does not produce (one seed, one
    family, no sweep): its caption and label, so references resolve, and in place of
    the tabular why it is empty (``reason``, data)."""
    return with_stamp(stamp, [rf"\begin{{table}}[{placement}]", r"\centering",
                              rf"\caption{{{caption}}}", rf"\label{{{label}}}",
                              rf"\emph{{{escape_latex(reason)}}}", r"\end{table}"])


def _group_header(groups: list[tuple[str, int]]) -> list[str]:
    """The \\multicolumn row and its \\cmidrule's for ``booktabs_table``'s groups."""
    if not groups:
        return []
    cells, rules, start = [], [], 1
    for label, n in groups:
        cells.append(label if n == 1 else rf"\multicolumn{{{n}}}{{c}}{{{label}}}")
        if label:
            rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
        start += n
    return [" & ".join(cells) + r" \\", "".join(rules)] if rules else []


# --------------------------------------------------------------------------- numbers

_DIGITS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")


def macro_name(key: str) -> str:
    r"""LaTeX macro for a number's key: split at anything that is not a letter or a
    digit and between letters and digits, capitalise each part, spell each digit:
    ``atm/mean_full_absorption`` -> ``\AtmMeanFullAbsorption``,
    ``probing/mean_top1`` -> ``\ProbingMeanTopOne``."""
    parts = re.findall(r"[A-Za-z]+|[0-9]", key)
    if not parts or not parts[0][0].isalpha():
        raise ValueError(f"cannot name a macro after {key!r}: it must start with a letter")
    words = [_DIGITS[int(p)] if p.isdigit() else p[0].upper() + p[1:] for p in parts]
    return "\\" + "".join(words)


def numbers_tex(values: dict[str, Any], stamp: Stamp, sig: int = 3) -> str:
    """``\\newcommand{\\Name}{value}`` per key, sorted by macro name. Numbers use
    ``format_number(sig)``, strings are escaped (``Tex`` is kept), missing values
    print ``MISSING_NUMBER``. Two keys with one macro name are an error."""
    by_macro: dict[str, str] = {}
    for key in values:
        name = macro_name(key)
        if name in by_macro:
            raise ValueError(f"keys {by_macro[name]!r} and {key!r} both map to macro {name}")
        by_macro[name] = key
    lines = []
    for name in sorted(by_macro):
        value = values[by_macro[name]]
        if is_missing(value):
            text = Tex(MISSING_NUMBER)
        elif isinstance(value, str):
            text = escape_latex(value)
        else:
            text = format_number(value, sig)
        lines.append(rf"\newcommand{{{name}}}{{{text}}}")
    return with_stamp(stamp, lines)


def profile_tex(stamp: Stamp) -> str:
    """Sets main.tex's ``\\ifsmoke`` and the profile / commit it prints."""
    return with_stamp(stamp, [
        r"\smoketrue" if stamp.smoke else r"\smokefalse",
        rf"\def\GenProfile{{{escape_latex(stamp.profile)}}}",
        rf"\def\GenCommit{{{escape_latex(stamp.commit)}}}",
    ])


def setting_value(value: Any) -> int | Tex:
    """A config value as quotable LaTeX (integers stay numbers; lists joined)."""
    if value is None:
        return Tex("none")
    if isinstance(value, bool):
        return Tex("yes" if value else "no")
    if isinstance(value, (list, tuple)):
        return Tex(", ".join(format_number(v) if isinstance(v, int) else v
                             for v in map(setting_value, value)))
    if isinstance(value, numbers.Integral):
        return int(value)
    if _is_number(value):
        # shortest positional form (0.0003, 0.99): no exponent, no trailing zeros
        return _tex_number(np.format_float_positional(float(value), trim="-"))
    return escape_latex(str(value))


def joined(items: list[str]) -> Tex:
    return Tex("; ".join(items) if items else "none")

