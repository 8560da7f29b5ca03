"""atm_repro.config: the schema's field documentation (``explain``) and its
independence from the rest of the project."""

from __future__ import annotations

import ast
import dataclasses
import typing

import pytest

import atm_repro.config as config_mod
from atm_repro.config import NOT_STATED, ConfigError, Profile, explain
from atm_repro.profiles import load_profile


def schema_classes(cls: type = Profile) -> set[type]:
    """``cls`` and every dataclass its fields hold (directly or as mapping values)."""
    found = {cls}
    for tp in typing.get_type_hints(cls).values():
        for inner in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(inner) and inner not in found:
                found |= schema_classes(inner)
    return found


def test_every_schema_field_is_documented():
    classes = schema_classes()
    assert {c.__name__ for c in classes} >= {"TrainConfig", "SAESpec", "SweepConfig",
                                             "CacheConfig", "ModelConfig"}
    for cls in classes:
        for f in dataclasses.fields(cls):
            assert len(f.metadata.get("help", "")) > 10, f"{cls.__name__}.{f.name}"
            assert f.metadata.get("paper"), f"{cls.__name__}.{f.name}"


def test_explain_gives_help_default_profile_and_paper_values():
    cpu = load_profile("cpu", {"train.lr": 0.0007})
    lines = explain(cpu, "train.lr").splitlines()
    assert lines[0] == "train.lr" and "learning rate" in lines[1]
    assert lines[2:] == ["  default: 0.0003", "  profile cpu: 0.0007", "  paper: 3e-4"]
    assert explain(cpu, "train.width").splitlines()[-1] == "  paper: 16384"
    dtype = explain(cpu, "train.dtype").splitlines()
    assert dtype[2:] == ["  default: float32", "  profile cpu: auto", f"  paper: {NOT_STATED}"]
    # into mappings of sections: a spec's own field, with this profile's value
    spec = explain(load_profile("paper"), "train.saes.topk.lr").splitlines()
    assert spec[2:4] == ["  default: null", "  profile paper: 0.0002"]
    assert "required" in explain(cpu, "name").splitlines()[2]


@pytest.mark.parametrize("key,close", [
    ("train.lrr", "train.lr"),
    ("lr", "train.lr"),  # a leaf name alone finds its full key
    ("cache.dtpye", "cache.dtype"),
])
def test_explain_an_unknown_key_lists_close_matches(key, close):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'; close matches: ") as err:
        explain(load_profile("smoke"), key)
    assert close in str(err.value).split("close matches: ")[1].split(", ")


def test_explain_without_close_matches_lists_the_top_level_keys():
    with pytest.raises(ConfigError, match="keys at the top: name, description, .*train"):
        explain(load_profile("smoke"), "zzzzzz")


def test_config_imports_nothing_from_the_project():
    """config.py is the schema only: hardware facts (``train.dtype: auto``) are resolved
    outside it (hardware.resolve_dtype, train.run_config)."""
    tree = ast.parse(open(config_mod.__file__).read())
    imported = [node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names]
    assert "dataclasses" in imported
    assert not [m for m in imported if m and m.split(".")[0] == "atm_repro"]
