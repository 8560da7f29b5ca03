"""The shared SAE base: parameters, encode/decode, and the contract a variant fills.

Notation: B tokens, D = d_in, F = d_sae. Parameters follow SAELens:
W_enc [D, F], W_dec [F, D] (row i is decoder direction d_i), b_enc [F], b_dec [D].

A variant subclasses ``SAE``, registers the class (``registry.register_variant``,
next to it) and sets:
  * ``architecture`` (its registry name) and ``config_cls`` (a frozen
    dataclass derived from ``SAEConfig``; validated on construction);
  * ``saelens_architecture``: how the *inference* SAE is saved
    ("standard", "topk" or "jumprelu"; ``saelens_cfg`` adds its cfg.json
    entries);
  * ``subtract_b_dec``: encode ``x - b_dec`` (True) or ``x`` (False);
  * ``unit_norm_decoder``: the trainer then removes the gradient component
    parallel to each decoder row and renormalises rows after each step;
  * ``adam_betas``, and optionally ``param_groups`` (per-parameter learning-rate
    multipliers, e.g. JumpReLU's thresholds);
and implements ``activation`` (inference nonlinearity on pre-activations)
and ``training_forward`` (loss terms and per-step state updates). Per-step
state lives in registered buffers, so ``state_dict`` carries it into
checkpoints; ``inference_tensors`` is what the saved SAE holds.

Compiled steps. A variant puts the [B, F] arithmetic of its training step in a
``@kernel``: a pure function of tensors (parameters passed in, no module state,
no RNG, no branch on a tensor's value). Eager PyTorch runs each elementwise op
as its own pass over [B, F] (a dozen per step, plus dtype casts under
autocast); inside ``compiled_kernels(True)`` (the trainer's ``train.compile``)
the kernel runs through ``torch.compile``, which fuses them. The stateful parts
(mask draws, EMA updates) stay eager around it. Same function either way, so
the eager run is the reference the compiled one is tested against.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator, TypeVar

import torch
from torch import nn

from atm_repro.config import ConfigError


class SAEConfigError(ConfigError):
    """Bad SAE hyperparameters (raised before any training starts)."""


_COMPILE = {"on": False}
_Fn = TypeVar("_Fn", bound=Callable)


@contextlib.contextmanager
def compiled_kernels(on: bool = True) -> Iterator[None]:
    """Within this block every ``@kernel`` runs compiled (``on``) or eagerly."""
    before = _COMPILE["on"]
    _COMPILE["on"] = on
    try:
        yield
    finally:
        _COMPILE["on"] = before


def kernel(fn: _Fn) -> _Fn:
    """Mark a step's pure tensor function (module docstring, "Compiled steps").
    Compiled once per process on first use (static shapes: one graph per shape,
    dtype and autocast state; torch caches the generated code on disk)."""
    compiled: list[Callable] = []

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if not _COMPILE["on"]:
            return fn(*args, **kwargs)
        if not compiled:
            compiled.append(torch.compile(fn, dynamic=False))
        return compiled[0](*args, **kwargs)

    return run  # type: ignore[return-value]


def encoder_pre_acts(x_BD: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                     b_dec: torch.Tensor | None = None) -> torch.Tensor:
    """x W_enc + b_enc, or (x - b_dec) W_enc + b_enc when ``b_dec`` is given. The
    b_dec term is folded into the bias, b_enc - b_dec W_enc, so that autograd never
    forms the [B, D] gradient of the input (a full extra matmul per training
    step), and the bias rides in the matmul (``addmm``: under bfloat16 autocast
    the [B, F] result stays bfloat16, with no float32 copy). Leading dimensions
    other than one batch dimension ([B, S, D]) are kept."""
    bias_F = b_enc if b_dec is None else b_enc - b_dec @ W_enc
    lead = x_BD.shape[:-1]
    return torch.addmm(bias_F, x_BD.reshape(-1, x_BD.shape[-1]), W_enc).view(*lead, -1)


@dataclass(frozen=True)
class SAEConfig:
    """Shape plus the fields every variant has. Variants add their own fields."""

    d_in: int
    d_sae: int
    coeff_warmup_frac: float = 0.05  # sparsity coefficient ramps 0 -> value over this fraction

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.d_sae <= 0:
            raise SAEConfigError(f"d_in and d_sae must be > 0, got {self.d_in}, {self.d_sae}")
        if not 0.0 <= self.coeff_warmup_frac <= 1.0:
            raise SAEConfigError("coeff_warmup_frac must be in [0, 1]")


@dataclass
class StepContext:
    """What the trainer tells a variant about the current step."""

    step: int  # 0-based optimizer step
    total_steps: int
    dead_mask_F: torch.Tensor  # bool [F]: latents dead by the trainer's token count
    generator: torch.Generator  # the trainer's RNG, for stochastic variants (checkpointed)

    def warmup(self, frac: float) -> float:
        """Linear ramp 0 -> 1 over the first ``frac`` of training (1 if frac == 0)."""
        ramp_steps = frac * self.total_steps
        return 1.0 if ramp_steps <= 0 else min(1.0, (self.step + 1) / ramp_steps)


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to backpropagate
    terms: dict[str, torch.Tensor]  # named scalar parts (detached), logged by the trainer
    x_hat_BD: torch.Tensor
    fired_F: torch.Tensor  # int64 [F]: tokens of the batch on which each latent is nonzero
    # the [B, F] latents used for reconstruction, or a function that forms them
    # (sparse variants never do in training; the trainer reads only ``fired_F``)
    latents: torch.Tensor | Callable[[], torch.Tensor]

    @property
    def latents_BF(self) -> torch.Tensor:
        return self.latents() if callable(self.latents) else self.latents


def firing_counts(latents_BF: torch.Tensor) -> torch.Tensor:
    """Per latent, the tokens of the batch on which it is nonzero (int64 [F])."""
    return torch.count_nonzero(latents_BF.detach(), dim=0)


def reconstruction_loss(x_hat_BD: torch.Tensor, x_BD: torch.Tensor) -> torch.Tensor:
    """Squared error summed over D, mean over the batch (the spec's MSE)."""
    return (x_hat_BD - x_BD).pow(2).sum(-1).mean()


class SAE(nn.Module):
    architecture: ClassVar[str] = ""
    config_cls: ClassVar[type[SAEConfig]] = SAEConfig
    saelens_architecture: ClassVar[str] = "standard"
    subtract_b_dec: ClassVar[bool] = False
    unit_norm_decoder: ClassVar[bool] = False
    decoder_init_norm: ClassVar[float] = 1.0
    adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.999)

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        if not isinstance(cfg, self.config_cls):
            raise SAEConfigError(f"{type(self).__name__} needs a {self.config_cls.__name__}")
        self.cfg = cfg
        D, F = cfg.d_in, cfg.d_sae
        self.W_enc = nn.Parameter(torch.empty(D, F))
        self.W_dec = nn.Parameter(torch.empty(F, D))
        self.b_enc = nn.Parameter(torch.zeros(F))
        self.b_dec = nn.Parameter(torch.zeros(D))

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator, b_dec_D: torch.Tensor | None = None) -> None:
        """Random decoder directions of norm ``decoder_init_norm``; W_enc = W_dec^T;
        b_dec = ``b_dec_D``.

        Every variant starts centred: its pre-activations at init are
        (x - b_dec) W_enc. A variant that encodes x itself (``subtract_b_dec``
        False) gets b_enc = -b_dec W_enc for that; with b_enc = 0 a latent whose
        direction points away from the data's mean never fires and never gets a
        gradient (18% of the latents on Gemma-3-270m's residual stream,
        docs/methods.md "Initialisation")."""
        W = torch.randn(self.W_dec.shape, generator=generator, dtype=self.W_dec.dtype)
        W *= self.decoder_init_norm / W.norm(dim=-1, keepdim=True)
        self.W_dec.copy_(W)
        self.W_enc.copy_(W.T)
        self.b_enc.zero_()
        if b_dec_D is not None:
            self.b_dec.copy_(b_dec_D)
            if not self.subtract_b_dec:
                self.b_enc.copy_(-(self.b_dec @ self.W_enc))

    # ------------------------------------------------------------- inference
    def pre_acts(self, x_BD: torch.Tensor) -> torch.Tensor:
        """(x - b_dec) W_enc + b_enc, or x W_enc + b_enc (``encoder_pre_acts``)."""
        return encoder_pre_acts(x_BD, self.W_enc, self.b_enc,
                                self.b_dec if self.subtract_b_dec else None)

    def activation(self, z_BF: torch.Tensor) -> torch.Tensor:
        """Inference nonlinearity (no masks, no batch coupling)."""
        return torch.relu(z_BF)

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_acts(x_BD))

    def decode(self, f_BF: torch.Tensor) -> torch.Tensor:
        return f_BF @ self.W_dec + self.b_dec

    def forward(self, x_BD: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x_BD))

    # -------------------------------------------------------------- training
    def training_forward(self, x_BD: torch.Tensor, ctx: StepContext) -> LossOutput:
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        """Adam parameter groups; the trainer sets each group's lr to the scheduled
        lr times its ``lr_scale``. Default: one group at the base rate."""
        return [{"params": list(self.parameters()), "lr_scale": 1.0}]

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out the gradient component along each (unit) decoder row."""
        if self.W_dec.grad is None:
            return
        W, grad = self.W_dec, self.W_dec.grad
        coef_F = torch.linalg.vecdot(grad, W) / torch.linalg.vecdot(W, W).clamp_min(1e-24)
        grad.addcmul_(coef_F[:, None], W, value=-1.0)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    # ---------------------------------------------------------------- saving
    def inference_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors of the saved inference SAE (SAELens names and shapes)."""
        return {
            "W_enc": self.W_enc.detach(),
            "W_dec": self.W_dec.detach(),
            "b_enc": self.b_enc.detach(),
            "b_dec": self.b_dec.detach(),
        }

    def saelens_cfg(self) -> dict:
        """Architecture-specific cfg.json entries (e.g. ``k`` for topk)."""
        return {}

    # The two below read plain SAELens directories: the loader calls them on the
    # variant registered to read its architecture (``registry.VariantInfo``).
    @classmethod
    def params_from_saelens(cls, saelens_cfg: dict) -> dict:
        """Config params of a SAELens cfg.json (the inverse of ``saelens_cfg``)."""
        return {}

    def state_from_inference(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """State dict for saved SAELens tensors (the inverse of ``inference_tensors``,
        whose names ``tensors`` has)."""
        return {k: tensors[k].float() for k in ("W_enc", "W_dec", "b_enc", "b_dec")}

    # Whether the inference nonlinearity commutes with a positive per-latent
    # rescaling (ReLU, JumpReLU). TopK-style selections compare latents with each
    # other, so only one common scale keeps them exact.
    elementwise_activation: ClassVar[bool] = True

    def scale_thresholds(self, latent_scale_F: torch.Tensor) -> None:
        """Multiply the inference thresholds by ``latent_scale_F`` (no-op without any)."""

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on ``scale * x`` take raw ``x`` with unit-norm decoder rows.

        Latent j is multiplied by c_j = ||d_j|| / scale and its decoder row divided
        by ||d_j||: W_enc[:, j] *= ||d_j||, b_enc[j] *= c_j, thresholds *= c_j,
        b_dec /= scale. Reconstructions are unchanged; latents are in units of
        the raw residual stream along unit directions, which is what SAEBench
        and SAELens assume. Variants whose activation is not elementwise
        (TopK family) train with unit-norm rows, so c_j = 1 / scale for all j.
        """
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"input scale must be positive and finite, got {scale}")
        norm_F = self.W_dec.norm(dim=-1)
        if not self.elementwise_activation:
            if not torch.allclose(norm_F, torch.ones_like(norm_F), rtol=0, atol=1e-4):
                raise ValueError(f"{type(self).__name__}: decoder rows must be unit-norm "
                                 "to fold (its activation is not elementwise)")
            norm_F = torch.ones_like(norm_F)
        norm_F = norm_F.clamp_min(1e-12)
        latent_scale_F = norm_F / scale
        self.W_enc *= norm_F
        self.b_enc *= latent_scale_F
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self.b_dec /= scale
        self.scale_thresholds(latent_scale_F)
