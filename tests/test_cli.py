"""atm_repro.cli: ``plan --explain`` and the help that points to it."""

from __future__ import annotations

import pytest

from atm_repro import cli


def test_plan_explain_prints_the_field_and_not_the_plan(capsys):
    assert cli.main(["plan", "--profile", "cpu", "--explain", "train.lr"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "train.lr"
    assert "  default: 0.0003\n  profile cpu: 0.0006\n  paper: 3e-4\n" in out
    assert "model:" not in out  # the explanation, not the YAML plan


def test_plan_explain_with_overrides_shows_the_overridden_value(capsys):
    assert cli.main(["plan", "--profile", "smoke", "--set", "train.width=96",
                     "--explain", "train.width"]) == 0
    assert "  profile smoke: 96\n" in capsys.readouterr().out


def test_plan_explain_an_unknown_key_exits_2_with_close_matches(capsys):
    assert cli.main(["plan", "--profile", "cpu", "--explain", "train.widht"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: unknown config key 'train.widht'; close matches: " in err
    assert "train.width" in err


@pytest.mark.parametrize("command", ["run", "plan", "cache"])
def test_set_help_points_to_explain(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--set KEY=VALUE override a config value" in text
    assert "atm-repro plan --explain KEY" in text
