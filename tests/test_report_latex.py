"""atm_repro.report.latex: escaping, fixed number formatting, booktabs tables,
number macros and profile.tex."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import STAMP, body_rows

from atm_repro.report.latex import (
    Tex,
    booktabs_table,
    escape_latex,
    format_number,
    macro_name,
    numbers_tex,
    profile_tex,
    setting_value,
)
from atm_repro.report.provenance import Stamp


def test_escape_latex_specials_and_tex_passthrough():
    assert escape_latex("a_b & 50% $x #1 {y} ~ ^ \\ <>|") == (
        r"a\_b \& 50\% \$x \#1 \{y\} \textasciitilde{} \textasciicircum{} "
        r"\textbackslash{} \textless{}\textgreater{}\textbar{}")
    assert escape_latex(Tex(r"$L_0$")) == r"$L_0$"


@pytest.mark.parametrize("value, expected", [
    (260096, "260{,}096"), (5, "5"), (0.0068, "0.00680"), (0.9727, "0.973"),
    (3280.5, "3{,}280"), (40.0, "40.0"), (-0.5, r"\ensuremath{-}0.500"), (0.0, "0"),
    (float("nan"), "--"), (None, "--"), (0.9996, "1.00"), (99.96, "100"),
    (-0.99996, r"\ensuremath{-}1.00"), (0.9994, "0.999"),
])
def test_format_number(value, expected):
    assert format_number(value) == expected


def test_booktabs_table_escapes_formats_and_bolds_the_best():
    df = pd.DataFrame({"sae": ["top_k & co", "atm", "jump"],
                       "l0": [40.0, 3280.4, float("nan")],
                       "absorption": [0.1402, 0.0068, 0.00679]})
    text = booktabs_table(df, {"sae": "SAE", "l0": "$L_0$", "absorption": "Absorption"},
                          "Caption.", "tab:x", STAMP, fmt={"l0": ",.1f", "absorption": ".4f"},
                          best={"absorption": "min", "l0": "max"})
    assert text.splitlines()[0] == STAMP.comment
    assert r"\begin{tabular}{lrr}" in text and r"\label{tab:x}" in text
    assert body_rows(text) == [
        r"top\_k \& co & 40.0 & 0.1402 \\",
        # 0.0068 and 0.00679 print the same: both are the best as shown
        r"atm & \textbf{3{,}280.4} & \textbf{0.0068} \\",
        r"jump & -- & \textbf{0.0068} \\",
    ]


def test_booktabs_table_groups_align_and_bad_input():
    df = pd.DataFrame({"a": ["x"], "b": [1.0], "c": [2.0]})
    text = booktabs_table(df, {"a": "A", "b": "B", "c": "C"}, "Cap.", "tab:y", STAMP,
                          groups=[("", 1), ("Both", 2)], align="lcc")
    assert r"\begin{tabular}{lcc}" in text
    assert r" & \multicolumn{2}{c}{Both} \\" in text and r"\cmidrule(lr){2-3}" in text
    with pytest.raises(KeyError, match="missing"):
        booktabs_table(df, {"missing": "M"}, "Cap.", "tab:y", STAMP)
    with pytest.raises(ValueError, match="max"):
        booktabs_table(df, {"b": "B"}, "Cap.", "tab:y", STAMP, best={"b": "largest"})
    with pytest.raises(ValueError, match="span"):
        booktabs_table(df, {"b": "B"}, "Cap.", "tab:y", STAMP, groups=[("G", 2)])


@pytest.mark.parametrize("key, name", [
    ("atm/mean_full_absorption", r"\AtmMeanFullAbsorption"),
    ("probing/mean_top1", r"\ProbingMeanTopOne"),
    ("sae/masked-reg/k", r"\SaeMaskedRegK"),
    ("core/l0", r"\CoreLZero"),
    ("frac_above_0.75", r"\FracAboveZeroSevenFive"),
])
def test_macro_name(key, name):
    assert macro_name(key) == name


def test_macro_name_rejects_keys_without_a_leading_letter():
    with pytest.raises(ValueError, match="start with a letter"):
        macro_name("0.7/frac")
    with pytest.raises(ValueError):
        macro_name("__")


def test_numbers_tex_sorted_formatted_and_collisions_are_errors():
    values = {"ours/atm/l0": 3280.4, "setup/model": "gemma-3_270m", "ours/topk/l0": None,
              "setup/raw": Tex(r"44\%"), "setup/tokens": 254000}
    text = numbers_tex(values, STAMP)
    assert text.splitlines() == [
        STAMP.comment,
        r"\newcommand{\OursAtmLZero}{3{,}280}",
        r"\newcommand{\OursTopkLZero}{n/a}",
        r"\newcommand{\SetupModel}{gemma-3\_270m}",
        r"\newcommand{\SetupRaw}{44\%}",
        r"\newcommand{\SetupTokens}{254{,}000}",
    ]
    # deterministic: insertion order and repetition do not change the bytes
    assert numbers_tex(dict(reversed(list(values.items()))), STAMP) == text
    with pytest.raises(ValueError, match="both map to macro"):
        numbers_tex({"ours/a_b": 1, "ours/aB": 2}, STAMP)


def test_rendering_is_deterministic_and_profile_tex():
    df = pd.DataFrame({"a": ["x", "y"], "b": [0.123456, 2.0]})
    args = (df, {"a": "A", "b": "B"}, "Cap.", "tab:z", STAMP)
    assert booktabs_table(*args) == booktabs_table(*args)
    assert profile_tex(Stamp("smoke", True, "abc")).splitlines()[1:] == [
        r"\smoketrue", r"\def\GenProfile{smoke}", r"\def\GenCommit{abc}"]


@pytest.mark.parametrize("value, expected", [
    (None, "none"), (True, "yes"), (7, 7), (0.0003, "0.0003"), (0.99, "0.99"),
    ([1, 2000], "1, 2{,}000"), ("per_latent", r"per\_latent"),
])
def test_setting_value(value, expected):
    assert setting_value(value) == expected
