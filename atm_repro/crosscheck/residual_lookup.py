"""Our residual streams served to SAEBench in place of its own model forward.

Two implementations of one model (TransformerLens in SAEBench, transformers in
ours) agree only to rounding, and SAEBench's ground-truth probe turns that
rounding into letters that sit on one side of its F1 cut or the other
(docs/metrics.md). Handing SAEBench the very residuals our eval read isolates
what the crosscheck tests: the metric's code (probes, k-sparse selection,
scoring), not the model's floating point.

This module is imported by ``saebench_driver.py`` inside SAEBench's environment
and by atm_repro's tests, so it uses numpy and torch only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def save_residuals(path: Path, prompts: list[str], acts_ND: np.ndarray) -> None:
    """Prompts and the residual at each prompt's word token (row for row)."""
    if len(prompts) != len(acts_ND):
        raise ValueError(f"residuals: {len(prompts)} prompts but {len(acts_ND)} rows")
    tmp = Path(path).with_suffix(".tmp")
    with tmp.open("wb") as f:
        np.savez(f, prompts=np.array(prompts), acts_ND=np.asarray(acts_ND, dtype=np.float32))
    tmp.replace(path)


def load_residuals(path: Path) -> tuple[list[str], np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z["prompts"].tolist(), z["acts_ND"]


class ResidualLookup:
    """A stand-in for TransformerLens's ``run_with_cache`` as SAEBench's absorption
    code calls it (a list of prompt strings, ``names_filter=[hook_point]``).

    It returns, for each prompt, the stored residual at ``token_pos`` and NaN at
    every other position, so a read of any other position shows up as NaN in
    SAEBench's output rather than as a plausible number. A prompt we did not build
    is an error: the two sides' prompts must be the same strings.
    """

    def __init__(self, prompts: list[str], acts_ND: np.ndarray, hook_point: str,
                 token_pos: int, to_tokens):
        self.acts_ND = torch.from_numpy(np.asarray(acts_ND, dtype=np.float32))
        self.hook_point, self.token_pos, self.to_tokens = hook_point, token_pos, to_tokens
        self.row: dict[str, int] = {}
        for i, prompt in enumerate(prompts):
            j = self.row.setdefault(prompt, i)
            if not torch.equal(self.acts_ND[i], self.acts_ND[j]):
                raise ValueError(f"residuals: prompt {prompt!r} appears twice with two "
                                 "different residuals")
        self.served = 0

    def __call__(self, prompts: list[str], names_filter=None, **_kwargs):
        if list(names_filter or []) != [self.hook_point]:
            raise ValueError(f"residuals: only {self.hook_point!r} is stored, "
                             f"asked for {names_filter!r}")
        missing = [p for p in prompts if p not in self.row]
        if missing:
            raise KeyError(f"residuals: {len(missing)} of {len(prompts)} prompts were not "
                           f"built by our eval, e.g. {missing[0]!r}: the two sides' "
                           "prompts differ")
        n_tokens = self.to_tokens(prompts).shape[1]
        out_BTD = torch.full((len(prompts), n_tokens, self.acts_ND.shape[1]), float("nan"))
        out_BTD[:, self.token_pos] = self.acts_ND[[self.row[p] for p in prompts]]
        self.served += len(prompts)
        return None, {self.hook_point: out_BTD}
