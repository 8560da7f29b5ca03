"""``saelens``: our trainer against SAELens's ``SAETrainer`` (optional extra
``bench``), first standard and first TopK spec, each over the profile's full
budget (``train.tokens // train.batch_size`` steps; ``steps`` is not used).

SAELens runs our recipe (``saelens_trainer``): the same rows in the same order;
our input scale as its ``activation_scaler.scaling_factor`` (fit() then skips its
own mean-norm estimate and folds ours); our initial W_enc, W_dec, b_enc, b_dec
(``our_init``, copied: same names and layout); lr, warm-up and linear decay to 0
(``saelens_schedule``); Adam betas (eps 1e-8 and the grad-norm clip 1.0 are both
trainers' defaults); the spec's precision (bfloat16 autocast or float32).
Standard: the same loss, MSE + lambda * sum_i f_i ||d_i||, so lambda passes
unchanged, and the same ramp step for step. TopK: k, AuxK weight, k_aux = d_in // 2
and the dead-latent window (``saelens_dead_window``). Still different, by each
trainer's design: ours holds TopK decoder rows at unit norm, SAELens lets them
drift and divides the norms out (``rescale_acts_by_decoder_norm``); its AuxK is
not divided by the residual's variance, is scaled by min(dead / k_aux, 1) and
skips the ReLU; its Adam is not fused. Rows: tokens/s of the two training loops,
L0 and FVU of the two SAEs on the same eval rows (``train.summarize``); details:
dead fractions and what SAELens hard-codes differently (``saelens_unmatched``).
"""

from __future__ import annotations

import time

import torch

from atm_repro.bench.common import BenchError, Row, first_spec, open_cache, train_steps
from atm_repro.config import Profile, SAESpec, TrainConfig
from atm_repro.runs import bench_dir
from atm_repro.saes import SAE, SAEConfig, build_config, build_sae
from atm_repro.train import BatchOrder, initialise, run_config, summarize

SAELENS_MISSING = "SAELens: not installed (pip install -e .[bench])"
# Same recipe, same start: the two FVUs should agree; ours may trail by this much
# (seed noise of a TopK FVU here is ~0.001) before the row fails.
SAELENS_FVU_MARGIN = 0.01
SAELENS_TENSORS = ("W_enc", "W_dec", "b_enc", "b_dec")  # same names and layout as ours


def saelens_schedule(steps: int, warmup_steps: int, decay_frac: float) -> dict[str, int]:
    """``SAETrainerConfig`` warm-up and decay steps giving our lr schedule
    (``train.lr_multiplier``). With its ``constant`` scheduler SAELens warms up as
    (t + 1) / warmup and decays linearly from lr (``lr_end``: where the decay starts)
    to 0 over the last ``lr_decay_steps``, as ours does. Its phases cannot overlap,
    so a warm-up reaching into the decay is cut short (``saelens_unmatched``)."""
    decay = int(decay_frac * steps)
    return {"lr_warm_up_steps": min(warmup_steps, steps - decay), "lr_decay_steps": decay}


def saelens_dead_window(dead_tokens: int, batch_size: int) -> int:
    """``dead_feature_window`` for our ``dead_tokens``: SAELens calls a latent dead
    after more than ``window`` steps without firing, ours once those steps hold
    ``>= dead_tokens`` tokens (steps >= ceil(dead_tokens / batch_size))."""
    return max(0, (dead_tokens - 1) // batch_size)


def saelens_unmatched(tcfg: TrainConfig, cfg: SAEConfig, steps: int) -> list[str]:
    """Our settings that SAELens's trainer cannot take (it hard-codes them)."""
    notes = []
    if tcfg.grad_clip != 1.0:
        notes.append(f"grad_clip {tcfg.grad_clip} (SAELens: 1.0)")
    if getattr(cfg, "aux_k", None) not in (None, cfg.d_in // 2):
        notes.append(f"aux_k {cfg.aux_k} (SAELens: d_in // 2)")
    if tcfg.lr_warmup_steps > steps - int(tcfg.lr_decay_frac * steps):
        notes.append("lr warm-up reaches into the decay (SAELens cuts the warm-up)")
    return notes


def our_init(spec: SAESpec, tcfg: TrainConfig, source, seed: int) -> tuple[SAE, float]:
    """Our SAE for ``spec`` initialised exactly as ``train.train_sae`` starts it for
    ``seed`` (weights, b_dec), and its input scale."""
    cfg = build_config(spec.variant, spec.params, source.d_model, tcfg.for_spec(spec).width)
    sae = build_sae(spec.variant, cfg)
    return sae, initialise(sae, source, tcfg, seed, torch.Generator().manual_seed(seed))


@torch.no_grad()
def copy_init(ours: SAE, theirs: torch.nn.Module) -> None:
    """Our initial parameters into SAELens's training SAE. Both store W_enc [D, F],
    W_dec [F, D] (rows are the directions), b_enc [F], b_dec [D]: a plain copy,
    shapes checked, so that a transposed or missing tensor raises."""
    extra = {n for n, _ in ours.named_parameters()} - set(SAELENS_TENSORS)
    if extra:
        raise BenchError(f"{type(ours).__name__} has parameters SAELens lacks: {sorted(extra)}")
    for name in SAELENS_TENSORS:
        src, dst = getattr(ours, name), getattr(theirs, name)
        if src.shape != dst.shape:
            raise BenchError(f"{name}: ours {tuple(src.shape)}, SAELens {tuple(dst.shape)}")
        dst.copy_(src)


def _saelens_sae(sae_lens, ours: SAE, steps: int, device: str):
    """SAELens's training SAE shaped like ``ours`` (b_dec subtracted from the input or
    not, as ours). Standard: the same loss, MSE + lambda * sum_i f_i ||d_i||
    (``saes.standard``), so lambda passes as it is, and the same ramp length
    (``saelens_trainer`` aligns its first step). TopK: k and the AuxK weight; its
    k_aux is d_in // 2, our default (``saelens_unmatched``)."""
    cfg = ours.cfg
    common = dict(d_in=cfg.d_in, d_sae=cfg.d_sae, device=device,
                  apply_b_dec_to_input=ours.subtract_b_dec,
                  normalize_activations="expected_average_only_in")
    if ours.architecture == "standard":
        return sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(
            **common, l1_coefficient=cfg.l1_coefficient,
            l1_warm_up_steps=cfg.coeff_warmup_frac * steps))
    if ours.architecture == "topk":
        return sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(
            **common, k=cfg.k, aux_loss_coefficient=cfg.aux_alpha))
    raise BenchError(f"no SAELens counterpart set up for {ours.architecture!r}")


def saelens_trainer(sae_lens, spec: SAESpec, train: TrainConfig, source, steps: int):
    """SAELens's ``SAETrainer`` for ``spec``, set up as our trainer runs it for
    ``steps`` steps at ``train.seeds[0]``: same rows in the same order, input scale,
    initial weights and b_dec, lr and schedule, Adam betas, sparsity coefficient and
    ramp, dead-latent window and precision (bfloat16 autocast or none)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig  # optional (.[bench])

    tcfg = run_config(train, spec)
    seed, B = tcfg.seeds[0], tcfg.batch_size
    ours, scale = our_init(spec, tcfg, source, seed)
    sae = _saelens_sae(sae_lens, ours, steps, tcfg.device)
    copy_init(ours, sae)
    order = BatchOrder(len(source), B, seed)
    batches = (torch.from_numpy(source.gather(order.indices(step))) for step in range(steps))
    lr = spec.lr if spec.lr is not None else tcfg.lr
    beta1, beta2 = ours.adam_betas
    trainer = sae_lens.SAETrainer(SAETrainerConfig(
        total_training_samples=steps * B, train_batch_size_samples=B, lr=lr, lr_end=lr,
        **saelens_schedule(steps, tcfg.lr_warmup_steps, tcfg.lr_decay_frac),
        adam_beta1=beta1, adam_beta2=beta2, device=tcfg.device,
        autocast=tcfg.dtype == "bfloat16",
        dead_feature_window=saelens_dead_window(tcfg.dead_tokens, B),
        logger=LoggingConfig(log_to_wandb=False)), sae, batches)
    # Our scale, set up front: fit() then skips its own estimate (mean norm, where
    # ours is the root mean square) and folds this one into the weights at the end.
    trainer.activation_scaler.scaling_factor = scale
    # SAELens reads a coefficient before advancing it (step t: t / ramp), ours uses
    # (t + 1) / ramp: advance once so that both ramps match step for step.
    for scheduler in trainer.coefficient_schedulers.values():
        scheduler.step()
    return trainer


def train_saelens(sae_lens, profile: Profile, name: str, steps: int, source, eval_source) -> dict:
    """Train ``train.saes[name]`` with ``saelens_trainer``: tokens/s of its loop, our
    summary metrics of the trained SAE and its dead fraction."""
    trainer = saelens_trainer(sae_lens, profile.train.saes[name], profile.train, source, steps)
    start = time.perf_counter()
    trained = trainer.fit()
    wall_s = time.perf_counter() - start
    B = profile.train.batch_size
    return {**summarize(trained.eval(), eval_source, B), "tokens_per_s": steps * B / wall_s,
            "dead_frac": float(trainer.dead_neurons.float().mean())}


def run(profile: Profile, steps: int) -> tuple[list[Row], dict]:
    """Our trainer vs SAELens's (module docstring); ``steps`` is not used."""
    try:
        import sae_lens  # optional (.[bench]): only this section needs it
    except ImportError:
        return [Row("saelens", SAELENS_MISSING, None)], {"installed": False}
    cache = open_cache(profile)
    tcfg = profile.train
    source, eval_source = cache.source(tcfg.layer, "train"), cache.source(tcfg.layer, "eval")
    names = [n for n in (first_spec(profile, "standard"), first_spec(profile, "topk")) if n]
    for name in names:  # discarded: one-time set-up (imports, kernels) off the timed runs
        train_steps(profile, cache, name, 3, bench_dir(profile) / "saes" / "warmup", fresh=True)
        saelens_trainer(sae_lens, tcfg.saes[name], tcfg, source, 3).fit()
    rows, runs = [], {}
    for name in names:
        spec = tcfg.saes[name]
        scfg = run_config(tcfg, spec)
        full = scfg.tokens // scfg.batch_size
        ours = train_steps(profile, cache, name, full, bench_dir(profile) / "saelens" / name,
                           fresh=True).metrics
        theirs = train_saelens(sae_lens, profile, name, full, source, eval_source)
        rows += [Row("saelens", f"{name}: ours", ours["tokens_per_s"], "tok/s"),
                 Row("saelens", f"{name}: SAELens", theirs["tokens_per_s"], "tok/s"),
                 Row("saelens", f"{name}: ours / SAELens tokens/s",
                     ours["tokens_per_s"] / theirs["tokens_per_s"], "x", ">=", 1.5),
                 Row("saelens", f"{name}: L0 ours", ours["l0"]),
                 Row("saelens", f"{name}: L0 SAELens", theirs["l0"]),
                 Row("saelens", f"{name}: FVU ours", ours["fvu"]),
                 Row("saelens", f"{name}: FVU SAELens", theirs["fvu"]),
                 Row("saelens", f"{name}: FVU SAELens - FVU ours", theirs["fvu"] - ours["fvu"],
                     "", ">=", -SAELENS_FVU_MARGIN)]
        cfg = build_config(spec.variant, spec.params, source.d_model, scfg.width)
        runs[name] = {"steps": full, "dtype": scfg.dtype,
                      "dead_frac": {"ours": ours["dead_frac"], "saelens": theirs["dead_frac"]},
                      "unmatched": saelens_unmatched(scfg, cfg, full)}
    return rows, {"installed": True, "version": sae_lens.__version__, "saes": names,
                  "runs": runs}

