"""atm_repro.report.summaries: stage descriptions, the main table, metric health, labels."""

from __future__ import annotations

import pytest
from helpers import synthetic_tidy

from atm_repro.profiles import load_profile
from atm_repro.report.results import per_sae
from atm_repro.report.summaries import (
    absorption_health,
    describe_profile,
    label,
    labelled,
    main_table,
)


@pytest.fixture
def table():
    return per_sae(synthetic_tidy(load_profile("smoke")))


def test_main_table_averages_seeds_under_metric_ids(table):
    main = main_table(table)
    assert list(main.index) == list(load_profile("smoke").train.saes)
    assert main.columns[0] == "n_seeds" and (main["n_seeds"] == 2).all()
    assert "core/l0" in main and "probing/gender/top1" in main
    assert "stability/max_cos_frac_above_0.9" not in main  # not measured here
    atm = table[(table["name"] == "atm") & (table["group"] == "main")]["core/l0"]
    assert main.loc["atm", "core/l0"] == round(atm.mean(), 4)
    assert "atm-beta0.9" not in main.index  # ablation runs are not main


def test_labels_are_attached_only_for_display(table):
    shown = labelled(main_table(table))
    assert {"L0", "explained var.", "gender top-1", "n_seeds"} <= set(shown.columns)
    assert label("probing/language_id/top1") == "language_id top-1"
    assert label("core/ce_sae") == "core/ce_sae"  # undeclared: the id itself


def test_absorption_health_per_layer_and_name(table):
    health = absorption_health(table)
    assert health.index.names == ["layer", "name"]
    assert list(health.columns) == ["absorption/n_letters_kept", "absorption/mean_k1_f1",
                                    "absorption/max_k1_f1", "absorption/n_letter_latents",
                                    "absorption/wrong_letter_fire_rate", "absorption/meaningful"]
    assert len(health) == len(load_profile("smoke").train.saes)


def test_describe_profile_is_stable_and_rejects_unknown_stages():
    cfg = load_profile("smoke")
    text = describe_profile(cfg, "ablations")
    assert text.startswith("profile: smoke (smoke: numbers are meaningless)")
    assert "atm-beta0.9: atm with beta=0.9" in text
    assert describe_profile(cfg, "ablations") == text
    with pytest.raises(ValueError, match="unknown stage"):
        describe_profile(cfg, "deploy")
