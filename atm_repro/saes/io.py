"""Saving and loading inference SAEs in SAELens's on-disk layout.

A saved SAE is a directory::

    cfg.json                      SAELens v6 config + our "atm_repro" block
    sae_weights.safetensors       W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec
                                  (+ threshold [d_sae] for JumpReLU-style saves): exactly
                                  the variant's ``inference_tensors()``, nothing else
    atm_repro_state.safetensors   (only if non-empty) the rest of the module state, so our
                                  loader rebuilds the variant exactly: entries of
                                  ``state_dict()`` that the SAELens tensors do not hold
                                  bit for bit (JumpReLU's log-threshold, BatchTopK's scalar
                                  threshold, ATM's EMA statistics)

Training state (optimizer, step, RNG, dead counters) is not here: the trainer
keeps it in ``checkpoint.pt`` next to these files (see ``atm_repro.train``).

cfg.json, as SAELens 6.x's ``SAE.load_from_disk`` reads it (checked against
sae-lens 6.54): the loader calls ``handle_config_defaulting``, which treats a
config without ``sae_lens_version`` (top level or in ``metadata``) as pre-6.0 and
rewrites it, so ``metadata.sae_lens_version`` is set to ``SAELENS_FORMAT_VERSION``
(the format written, not an installed package). It then keeps only the fields
of the architecture's config dataclass (``d_in``, ``d_sae``, ``dtype``,
``device``, ``apply_b_dec_to_input``, ``normalize_activations``,
``reshape_activations``, ``k`` for topk), builds ``metadata`` from the dict of
that name, and loads the safetensors file with ``strict=True``, so it must hold
exactly the architecture's parameters. Everything else (the flat copies of the
metadata keys, ``hook_layer``, our ``atm_repro`` block) is ignored by SAELens;
the flat keys are there for tools that read pre-6 configs (SAEBench, older
SAELens). The input scale used in training is folded into the weights before
saving (``SAE.fold_input_scale``), so ``normalize_activations`` is always "none",
the SAE takes raw residual-stream activations, and every decoder row has unit
norm: the scale goes into the latents (b_enc, b_dec and thresholds scale), which
is what SAEBench's absorption scoring assumes of the SAEs it is given.
Verified with sae-lens 6.54.12 in a throwaway venv (not a dependency):
``SAE.load_from_disk`` loads a save of every variant and its ``encode`` /
``forward`` match ours to float rounding; ``load_sae`` reads SAELens's own
``save_model`` output back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from atm_repro.codehash import code_key
from atm_repro.saes import (
    SAE,
    SAEConfigError,
    build_config,
    build_sae,
    config_dict,
    get_variant,
)
from atm_repro.saes.registry import SAELENS_ARCHITECTURES, saelens_reader

SAE_CFG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"
EXTRA_STATE = "atm_repro_state.safetensors"
SAELENS_FORMAT_VERSION = "6.0.0"


def sae_code_version(variant: type[SAE]) -> str:
    """Code key (``codehash``) of training a ``variant`` SAE: the trainer (named, not
    imported: it sits above this module), the cache's row sources it reads and the
    variant's class; the registry of variants is cut, so other variants stay out."""
    return code_key("atm_repro.train:train_sae", "atm_repro.cache:ActivationCache",
                    "atm_repro.cache:ArraySource", variant,
                    cut=("atm_repro.saes.registry:VARIANTS",))


@dataclass(frozen=True)
class SAEMeta:
    """Where a saved SAE's inputs come from (cfg.json metadata)."""

    model_name: str
    hook_name: str
    layer: int
    context_size: int
    dataset_path: str
    prepend_bos: bool = True


def _saelens_cfg(sae: SAE, meta: SAEMeta) -> dict:
    metadata = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,
        "model_name": meta.model_name,
        "hook_name": meta.hook_name,
        "hook_head_index": None,
        "context_size": meta.context_size,
        "prepend_bos": meta.prepend_bos,
        "dataset_path": meta.dataset_path,
        "seqpos_slice": [None],
        "model_from_pretrained_kwargs": {},
    }
    return {
        "architecture": sae.saelens_architecture,
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(sae.subtract_b_dec),
        "normalize_activations": "none",
        "reshape_activations": "none",
        **sae.saelens_cfg(),
        "metadata": metadata,
        # flat (pre-6) copies for readers of the old layout
        **{k: v for k, v in metadata.items() if k != "sae_lens_version"},
        "hook_layer": meta.layer,
    }


def save_sae(
    sae: SAE,
    path: str | Path,
    meta: SAEMeta,
    input_scale_folded: float = 1.0,
    extra: dict | None = None,
) -> Path:
    """Write ``sae`` (whose input scale is already folded in) to directory ``path``.

    ``input_scale_folded`` is recorded (1.0 = trained on raw inputs); ``extra``
    goes into cfg.json's "atm_repro" block (e.g. the training key).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous()
               for k, v in sae.inference_tensors().items()}
    state = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    rest = {k: v for k, v in state.items()
            if not (k in tensors and tensors[k].shape == v.shape and torch.equal(tensors[k], v))}
    save_file(tensors, path / SAE_WEIGHTS)
    (path / EXTRA_STATE).unlink(missing_ok=True)
    if rest:
        save_file(rest, path / EXTRA_STATE)
    cfg = _saelens_cfg(sae, meta)
    cfg["atm_repro"] = {
        "variant": sae.architecture,
        "config": config_dict(sae.cfg),
        "input_scale_folded": float(input_scale_folded),
        "code_version": sae_code_version(type(sae)),
        **(extra or {}),
    }
    (path / SAE_CFG).write_text(json.dumps(cfg, indent=1))
    return path


def read_cfg(path: str | Path) -> dict:
    """cfg.json of a saved SAE directory (clear error if it is not one)."""
    path = Path(path)
    for name in (SAE_CFG, SAE_WEIGHTS):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a saved SAE: missing {name}")
    return json.loads((path / SAE_CFG).read_text())


def load_sae(path: str | Path, device: str = "cpu") -> SAE:
    """Load a saved SAE as one of our variants, in eval mode.

    Directories we wrote rebuild their exact variant from cfg.json's "atm_repro"
    block; plain SAELens directories (no activation normalisation) load as the
    variant registered to read their architecture (``VariantInfo.reads_saelens``:
    standard / topk / jumprelu).
    """
    path = Path(path)
    cfg = read_cfg(path)
    tensors = load_file(path / SAE_WEIGHTS)
    if "atm_repro" in cfg:
        block = cfg["atm_repro"]
        params = {k: v for k, v in block["config"].items() if k not in ("d_in", "d_sae")}
        sae_cfg = build_config(block["variant"], params, cfg["d_in"], cfg["d_sae"],
                               where=f"{path / SAE_CFG}:atm_repro.config")
        sae = build_sae(block["variant"], sae_cfg)
        if (path / EXTRA_STATE).is_file():
            rest = load_file(path / EXTRA_STATE)
        else:
            rest = {}
        own = sae.state_dict()
        state = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
        state.update(rest)
    else:
        sae, state = _from_saelens(cfg, tensors, path)
    try:
        sae.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SAEConfigError(f"{path}: saved tensors do not fit {type(sae).__name__}: {exc}") \
            from None
    return sae.to(device).eval()


def _from_saelens(cfg: dict, tensors: dict[str, torch.Tensor], path: Path) \
        -> tuple[SAE, dict[str, torch.Tensor]]:
    """Our variant + state dict for a directory written by SAELens itself."""
    arch = cfg.get("architecture", "standard")
    if cfg.get("activation_fn", cfg.get("activation_fn_str")) == "topk":  # pre-6 topk
        arch, cfg = "topk", {**cfg, "k": cfg["activation_fn_kwargs"]["k"]}
    variant = saelens_reader(arch)
    if variant is None:
        readable = sorted(a for a in SAELENS_ARCHITECTURES if saelens_reader(a) is not None)
        raise SAEConfigError(f"{path}: SAELens architecture {arch!r} is not supported; "
                             f"supported: {readable}")
    if cfg.get("normalize_activations", "none") not in ("none", False):
        raise SAEConfigError(f"{path}: normalize_activations={cfg['normalize_activations']!r} "
                             "is not supported (fold the normalisation into the weights first)")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise SAEConfigError(f"{path}: rescale_acts_by_decoder_norm is not supported")
    params = get_variant(variant).params_from_saelens(cfg)
    sae = build_sae(variant, build_config(variant, params, cfg["d_in"], cfg["d_sae"],
                                          where=str(path / SAE_CFG)))
    expected = set(sae.inference_tensors())
    if set(tensors) != expected:
        raise SAEConfigError(f"{path}: expected tensors {sorted(expected)} for {arch!r}, "
                             f"found {sorted(tensors)}")
    try:
        state = sae.state_from_inference(tensors)
    except SAEConfigError as exc:
        raise SAEConfigError(f"{path}: {exc}") from None
    # Our class may (not) subtract b_dec before encoding; move that into b_enc.
    applies = bool(cfg.get("apply_b_dec_to_input", True))
    if applies != sae.subtract_b_dec:
        shift_F = state["b_dec"] @ state["W_enc"]
        state["b_enc"] = state["b_enc"] - shift_F if applies else state["b_enc"] + shift_F
    return sae, state

