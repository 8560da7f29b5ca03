"""Code keys hash the code a result depends on: refactors keep them, computations change them."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pytest

import atm_repro
from atm_repro import codehash
from atm_repro.codehash import code_key, definitions
from atm_repro.saes import io
from atm_repro.saes.atm import ATMSAE
from atm_repro.saes.topk import TopKSAE

LOSSES = '''"""Losses of a toy package."""

import numpy as np

from toypkg import other
from toypkg.base import Base

SCALE = 2.0
REGISTRY = {"a": None}


def helper(x):
    """Square it."""
    return x * x  # elementwise


def loss(x, l1):
    """Reconstruction plus a scaled L1 term."""
    return np.sum(helper(x)) + l1 * np.abs(x).sum() * SCALE + other.offset()


def unused(x):
    return x + 1


class Variant(Base):
    def forward(self, x):
        return loss(x, 0.1)


class Other(Base):
    def forward(self, x):
        return x


def lookup(name):
    return REGISTRY[name]


REGISTRY.update({"variant": Variant, "other": Other})
'''

FILES = {
    "__init__.py": '__version__ = "0"\n',
    "losses.py": LOSSES,
    "other.py": ("OFFSET = 1.0\n\n\ndef offset():\n    return OFFSET\n\n\n"
                 "def far():\n    return 3\n"),
    "base.py": "class Base:\n    def step(self, x):\n        return self.forward(x) * 0.5\n",
}


def toy_key(tmp_path: Path, *roots: str, cut: tuple[str, ...] = (), **edits: str) -> str:
    """Key of ``roots`` in a fresh copy of the toy package with ``edits``
    (module stem -> full source) applied."""
    src = tmp_path / f"tree{len(list(tmp_path.iterdir()))}" / "toypkg"
    src.mkdir(parents=True)
    for name, text in {**FILES, **{f"{k}.py": v for k, v in edits.items()}}.items():
        (src / name).write_text(text)
    return code_key(*(roots or ("toypkg.losses:loss",)), cut=cut, src=src)


def test_moving_a_helper_keeps_the_key(tmp_path):
    base = toy_key(tmp_path)
    moved_out = LOSSES.replace('''def helper(x):
    """Square it."""
    return x * x  # elementwise
''', "").replace("from toypkg.base import Base", "from toypkg.base import Base\n"
                 "from toypkg.other import helper")
    assert "def helper" not in moved_out
    other = FILES["other.py"] + "\n\ndef helper(y):\n    return y * y\n"
    assert toy_key(tmp_path, losses=moved_out, other=other) != base  # renamed argument
    other = FILES["other.py"] + "\n\ndef helper(x):\n    return x * x\n"
    assert toy_key(tmp_path, losses=moved_out, other=other) == base


def test_docstrings_comments_and_layout_do_not_count(tmp_path):
    base = toy_key(tmp_path)
    edited = (LOSSES.replace("Square it.", "Square it, elementwise.")
              .replace("# elementwise", "# squared")
              .replace('"""Losses of a toy package."""', '"""Other words."""')
              .replace("    return x * x", "    return (x *\n            x)"))
    assert edited != LOSSES
    assert toy_key(tmp_path, losses=edited) == base


@pytest.mark.parametrize("old,new", [
    ("l1 * np.abs(x).sum() * SCALE", "l1 * np.abs(x).sum() * 2"),  # a loss term
    ("return x * x", "return x * x * x"),  # a helper the root calls
])
def test_a_computation_changes_the_key(tmp_path, old, new):
    assert old in LOSSES
    assert toy_key(tmp_path, losses=LOSSES.replace(old, new)) != toy_key(tmp_path)


def test_constants_and_modules_reached_through_attributes_count(tmp_path):
    base = toy_key(tmp_path)
    assert toy_key(tmp_path, losses=LOSSES.replace("SCALE = 2.0", "SCALE = 3.0")) != base
    other = FILES["other.py"].replace("OFFSET = 1.0", "OFFSET = 0.0")
    assert toy_key(tmp_path, other=other) != base  # other.offset() -> OFFSET


def test_unreachable_definitions_do_not_count(tmp_path):
    base = toy_key(tmp_path)
    assert toy_key(tmp_path, losses=LOSSES.replace("return x + 1", "return x + 2")) == base
    assert toy_key(tmp_path, other=FILES["other.py"].replace("return 3", "return 4")) == base
    assert toy_key(tmp_path, base=FILES["base.py"].replace("0.5", "0.25")) == base


def test_classes_count_with_their_bases_and_a_cut_registry_stays_out(tmp_path):
    roots = ("toypkg.losses:lookup", "toypkg.losses:Variant")
    cut = ("toypkg.losses:REGISTRY",)
    base = toy_key(tmp_path, *roots, cut=cut)
    assert toy_key(tmp_path, *roots, cut=cut, base=FILES["base.py"].replace("0.5", "0.25")) != base
    other_changed = LOSSES.replace("        return x\n", "        return -x\n")
    assert other_changed != LOSSES
    assert toy_key(tmp_path, *roots, cut=cut, losses=other_changed) == base
    # without the cut the registry (and every class it holds) is reached
    assert toy_key(tmp_path, *roots, losses=other_changed) != toy_key(tmp_path, *roots)


def test_unknown_names_are_errors(tmp_path):
    with pytest.raises(ValueError, match="defines no"):
        toy_key(tmp_path, "toypkg.losses:missing")
    with pytest.raises(ValueError, match="no source"):
        toy_key(tmp_path, "toypkg.nowhere")


# --------------------------------------------------------------------------- real package


def copied_package(tmp_path: Path) -> Path:
    src = tmp_path / "atm_repro"
    shutil.copytree(Path(atm_repro.__file__).parent, src,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_training_keys_follow_the_variant(tmp_path, monkeypatch):
    atm, topk = io.sae_code_version(ATMSAE), io.sae_code_version(TopKSAE)
    assert atm != topk
    reached = definitions("atm_repro.train:train_sae", TopKSAE,
                          cut=("atm_repro.saes.registry:VARIANTS",))
    assert "atm_repro.saes.topk:TopKSAE" in reached and "atm_repro.train:lr_multiplier" in reached
    assert not any(k.startswith("atm_repro.saes.atm:") for k in reached)
    assert not any(k.startswith("atm_repro.codehash:") for k in reached)

    src = copied_package(tmp_path)
    monkeypatch.setattr(io, "code_key", partial(code_key, src=src))
    assert (io.sae_code_version(ATMSAE), io.sae_code_version(TopKSAE)) == (atm, topk)
    atm_py = src / "saes" / "atm.py"
    text = atm_py.read_text()
    for old, new in [("loss = MSE + lam * L1(f~)", "loss = MSE plus lam times L1(f~)"),
                     ("# f >= 0: sum_i f_i", "# nonnegative f")]:
        assert old in text
        atm_py.write_text(text.replace(old, new))
        assert io.sae_code_version(ATMSAE) == atm
    old = "return (mse + lam * l1,"
    assert old in text
    atm_py.write_text(text.replace(old, "return (mse + 2 * lam * l1,"))
    assert io.sae_code_version(ATMSAE) != atm
    assert io.sae_code_version(TopKSAE) == topk


def test_a_key_is_fast_and_stable():
    codehash._analyse.cache_clear()
    key = io.sae_code_version(ATMSAE)
    assert io.sae_code_version(ATMSAE) == key
    assert key.startswith(f"{atm_repro.__version__}+")
