"""The SAE trainer (atm_repro.train): recipe pieces, folding, exact resume, errors,
and a short run of every variant on the smoke profile's tiny-model cache."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from atm_repro.cache import ActivationCache, ArraySource, build_cache
from atm_repro.config import REPO_ROOT, ConfigError, Profile, SAESpec, TrainConfig, from_dict
from atm_repro.runs import METRICS, TRAIN_LOG, read_metrics, run_dir, sae_dir, snapshot_dir
from atm_repro.saes import SAE, VARIANTS, SAEConfigError, build_config, build_sae
from atm_repro.saes.base import LossOutput, firing_counts, reconstruction_loss
from atm_repro.saes.io import SAEMeta, load_sae
from atm_repro.train import (
    CHECKPOINT,
    BatchOrder,
    geometric_median,
    input_scale,
    lr_multiplier,
    summarize,
    train_profile,
    train_sae,
)

D, F = 16, 32
META = SAEMeta(model_name="synthetic", hook_name="blocks.0.hook_resid_post", layer=0,
               context_size=8, dataset_path="synthetic")




def synthetic_source(n: int = 3000, d: int = D, seed: int = 0, scale: float = 10.0) -> ArraySource:
    """Sparse non-negative combinations of 48 random unit directions, plus an offset,
    at a norm far from sqrt(d) so the input scale matters."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(48, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    codes = (rng.random((n, 48)) < 0.06) * rng.exponential(1.0, (n, 48))
    return ArraySource((scale * (codes @ dirs + 0.5 * rng.normal(size=d))).astype(np.float32))


def tcfg(**kw) -> TrainConfig:
    base = dict(width=F, batch_size=64, tokens=64 * 30, lr=3e-3, lr_warmup_steps=3,
                dead_tokens=640, init_sample_tokens=1000, log_every=5, seeds=[0])
    return TrainConfig(**{**base, **kw})


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / TRAIN_LOG).read_text().splitlines()]


def checkpoint(path: Path) -> dict:
    return torch.load(path / CHECKPOINT, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------- pieces


def test_input_scale_and_geometric_median():
    x = np.random.default_rng(0).normal(size=(500, 8)) * 7 + 3
    s = input_scale(x)
    assert np.isclose(((s * x) ** 2).sum(1).mean(), 8)
    with pytest.raises(ValueError, match="mean squared norm"):
        input_scale(np.zeros((4, 8)))

    pts = torch.randn(200, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pts[:20] += 100.0  # outliers drag the mean, not the median
    med = geometric_median(pts)

    def cost(y):
        return float((pts - y).norm(dim=1).sum())

    assert med.norm() < 1.0 < pts.mean(0).norm()
    for delta in torch.eye(4, dtype=torch.float64) * 1e-3:
        assert cost(med) <= cost(med + delta) and cost(med) <= cost(med - delta)


def test_batch_order_is_epochs_of_permutations():
    order = BatchOrder(n_rows=10, batch_size=4, seed=3)
    stream = np.concatenate([order.indices(step) for step in range(10)])  # 4 epochs
    for epoch in range(4):
        assert sorted(stream[epoch * 10:(epoch + 1) * 10]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    fresh = BatchOrder(10, 4, seed=3)  # a function of (seed, step), in any call order
    assert np.array_equal(fresh.indices(7), order.indices(7))
    assert not np.array_equal(BatchOrder(10, 4, seed=4).indices(0), order.indices(0))


def test_lr_schedule():
    lrs = [lr_multiplier(s, 20, warmup_steps=4, decay_frac=0.25) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[4:15] == [1.0] * 11
    assert lrs[15:] == [1.0, 0.8, 0.6, 0.4, 0.2]


def test_summary_metrics():
    source = synthetic_source(n=300)
    sae = build_sae("standard", build_config("standard", {}, D, F))
    eye = torch.eye(D)
    with torch.no_grad():  # f = [relu(x), relu(-x)], x_hat = x exactly
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    perfect = summarize(sae, source, batch_size=64, max_tokens=250)
    assert perfect["n_tokens"] == 250 and perfect["l0"] == D
    assert perfect["fvu"] == pytest.approx(0, abs=1e-6)
    x = source.gather(np.arange(250))
    with torch.no_grad():  # x_hat = mean(x): FVU 1, MSE = total variance / n
        sae.W_dec.zero_()
        sae.b_dec.copy_(torch.from_numpy(x.mean(0)))
    mean_only = summarize(sae, source, batch_size=64, max_tokens=250)
    assert mean_only["fvu"] == pytest.approx(1, rel=1e-5)
    assert mean_only["mse"] == pytest.approx(((x - x.mean(0)) ** 2).sum(1).mean(), rel=1e-5)


# --------------------------------------------------------------------------- contract


PROBE_SEEN: list = []


class ProbeSAE(SAE):
    """Records what the trainer passes; latent 0 always fires, latent 1 only at step 0."""

    architecture = "probe"

    def training_forward(self, x_BD, ctx):
        PROBE_SEEN.append((ctx.step, ctx.total_steps, ctx.dead_mask_F.clone()))
        x_hat_BD = self.decode(self.encode(x_BD))
        fired_BF = torch.zeros(x_BD.shape[0], self.cfg.d_sae)
        fired_BF[:, 0] = 1.0
        if ctx.step == 0:
            fired_BF[0, 1] = 1.0
        mse = reconstruction_loss(x_hat_BD, x_BD)
        return LossOutput(mse, {"mse": mse.detach()}, x_hat_BD, firing_counts(fired_BF), fired_BF)


def test_trainer_contract_dead_tracking_and_lr(tmp_path, monkeypatch):
    """The trainer uses only the base contract: a variant it has never heard of trains."""
    monkeypatch.setitem(VARIANTS, "probe", ProbeSAE)
    PROBE_SEEN.clear()
    cfg = tcfg(batch_size=10, tokens=100, dead_tokens=25, log_every=1, lr_warmup_steps=2,
               lr_decay_frac=0.5, lr=1e-2)
    result = train_sae("probe", SAESpec(variant="probe"), 0, cfg, synthetic_source(35),
                       tmp_path, META, progress=False)
    assert result.status == "trained" and result.steps == 10
    assert [s for s, _, _ in PROBE_SEEN] == list(range(10))
    assert {t for _, t, _ in PROBE_SEEN} == {10}
    for step, _, dead in PROBE_SEEN:
        assert not dead[0]
        assert bool(dead[1]) == ((step - 1) * 10 >= 25)  # last fired in step 0
        assert bool(dead[2:].all()) == (step * 10 >= 25) and bool(dead[2:].any()) == bool(dead[2])
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == list(range(1, 11))
    assert [r["tokens"] for r in log] == list(range(10, 101, 10))
    assert [r["lr"] for r in log] == pytest.approx(
        [1e-2 * lr_multiplier(s, 10, 2, 0.5) for s in range(10)])
    assert log[-1]["dead_frac"] == pytest.approx((F - 1) / F)
    assert log[-1]["l0"] == 1.0 and log[0]["l0"] == pytest.approx(1.1)
    assert result.metrics["dead_frac"] == pytest.approx((F - 1) / F)


# --------------------------------------------------------------------------- folding


@pytest.mark.parametrize("variant,params", [
    ("standard", {}),               # subtract_b_dec False
    ("topk", {"k": 4}),             # subtract_b_dec True
    ("batchtopk", {"k": 4}),        # saved with a threshold
    ("jumprelu", {}),               # learnt thresholds
])
def test_saved_sae_takes_raw_activations(tmp_path, variant, params):
    source = synthetic_source()
    result = train_sae(variant, SAESpec(variant=variant, params=params), 0, tcfg(tokens=64 * 20),
                       source, tmp_path, META, progress=False)
    ckpt = checkpoint(tmp_path)
    s = ckpt["input_scale"]
    assert result.metrics["input_scale"] == s and abs(s - 1) > 0.5
    trained = build_sae(variant, build_config(variant, params, D, F))
    trained.load_state_dict(ckpt["sae"])
    trained.eval()
    saved = load_sae(tmp_path)
    x = torch.from_numpy(source.gather(np.arange(500)))
    f = saved.encode(x)
    assert (f != 0).any()
    # latents rescale by ||d_j|| / s so that the saved decoder rows are unit-norm
    norm_F = trained.W_dec.norm(dim=-1).detach()
    torch.testing.assert_close(f, trained.encode(s * x) * norm_F / s, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(saved.W_dec.norm(dim=-1), torch.ones(F), rtol=0, atol=1e-5)
    torch.testing.assert_close(saved(x), trained(s * x) / s, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("variant,params", [
    ("atm", {"warmup_steps": 6, "min_keep": 0.5}),  # stochastic masks from ctx.generator
    ("topk", {"k": 4}),
])
def test_resume_is_bit_identical(tmp_path, variant, params):
    source, spec = synthetic_source(), SAESpec(variant=variant, params=params)
    cfg = tcfg(tokens=64 * 30, dead_tokens=256)
    full = train_sae(variant, spec, 0, cfg, source, tmp_path / "full", META, progress=False)
    part = train_sae(variant, spec, 0, cfg, source, tmp_path / "part", META, progress=False,
                     stop_after_steps=13)
    assert part.status == "interrupted" and part.steps == 13 and part.metrics is None
    assert not (tmp_path / "part" / METRICS).exists()
    # logged after the checkpoint, then "crashed"
    with (tmp_path / "part" / TRAIN_LOG).open("a") as f:
        f.write(json.dumps({"step": 14, "loss": -1.0}) + "\n")
    resumed = train_sae(variant, spec, 0, cfg, source, tmp_path / "part", META, progress=False)
    assert resumed.status == "trained" and resumed.steps == full.steps == 30

    a, b = checkpoint(tmp_path / "full"), checkpoint(tmp_path / "part")
    assert a["sae"].keys() == b["sae"].keys()
    for name in a["sae"]:
        assert torch.equal(a["sae"][name], b["sae"][name]), name
    assert torch.equal(a["generator"], b["generator"])
    assert torch.equal(a["since_fired"], b["since_fired"])
    fa, fb = load_sae(tmp_path / "full"), load_sae(tmp_path / "part")
    for name, t in fa.state_dict().items():
        assert torch.equal(t, fb.state_dict()[name]), name
    assert read_log(tmp_path / "full") == read_log(tmp_path / "part")
    if variant == "atm":
        assert "ema_magnitude" in a["sae"] and int(a["sae"]["ema_updates"]) == 30
        assert max(r["masked_frac"] for r in read_log(tmp_path / "full")) > 0  # masks were drawn
        other = train_sae(variant, spec, 1, cfg, source, tmp_path / "seed1", META, progress=False)
        assert not torch.equal(checkpoint(tmp_path / "seed1")["sae"]["W_dec"], a["sae"]["W_dec"])
        assert other.status == "trained"


def test_skip_unchanged_and_retrain_changed(tmp_path):
    source, spec = synthetic_source(), SAESpec(variant="topk", params={"k": 4})
    cfg = tcfg(tokens=64 * 10)
    first = train_sae("t", spec, 0, cfg, source, tmp_path, META, progress=False)
    again = train_sae("t", spec, 0, cfg, source, tmp_path, META, progress=False)
    assert again.status == "skipped" and again.metrics == first.metrics
    changed = train_sae("t", SAESpec(variant="topk", params={"k": 5}), 0, cfg, source,
                        tmp_path, META, progress=False)
    assert changed.status == "trained" and changed.metrics["l0"] <= 5 < first.metrics["l0"] + 2
    assert len(read_log(tmp_path)) == 2  # the old log was replaced, not appended to
    assert load_sae(tmp_path).cfg.k == 5


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("spec,match", [
    (dict(variant="nope"), "unknown SAE variant"),
    (dict(variant="topk", params={"k": F + 1}), "k"),
    (dict(variant="standard", params={"l1_coefficient": -1.0}), "l1_coefficient must be >= 0"),
    (dict(variant="atm", params={"l1_coefficient": -0.1}), "l1_coefficient must be >= 0"),
    (dict(variant="jumprelu", params={"l0_coefficient": -1.0}), "l0_coefficient must be >= 0"),
    (dict(variant="atm", params={"not_a_param": 1}), "unknown key.*not_a_param"),
])
def test_bad_spec_fails_before_training(tmp_path, spec, match):
    with pytest.raises(SAEConfigError, match=match):
        train_sae("x", SAESpec(**spec), 0, tcfg(), synthetic_source(), tmp_path, META,
                  progress=False)
    assert not (tmp_path / TRAIN_LOG).exists() and not (tmp_path / CHECKPOINT).exists()


def test_bad_lr_and_device():
    with pytest.raises(ConfigError, match="lr"):
        SAESpec(variant="standard", lr=-1e-3)
    with pytest.raises(ConfigError, match="lr"):
        tcfg(lr=-1.0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            train_sae("x", SAESpec(variant="standard"), 0, tcfg(device="cuda"),
                      synthetic_source(), Path("/nonexistent"), META, progress=False)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="torch has a subnormal flush mode on x86 only")
def test_training_refuses_a_thread_that_keeps_subnormals(tmp_path):
    """A worker thread made before the trainer's import keeps subnormals: training
    would then depend on what ran before, so it stops before its first step."""
    code = ("import sys, numpy as np, torch; torch.set_num_threads(2); "
            "torch.ones(1 << 20).mul_(2); "
            "from atm_repro.cache import ArraySource; from atm_repro.config import SAESpec, "
            "TrainConfig; from atm_repro.saes.io import SAEMeta; "
            "from atm_repro.train import train_sae; "
            "src = ArraySource(np.random.default_rng(0).normal(size=(512, 16)).astype('f4')); "
            "meta = SAEMeta('synthetic', 'blocks.0.hook_resid_post', 0, 8, 'synthetic'); "
            "cfg = TrainConfig(width=32, batch_size=64, tokens=256, init_sample_tokens=256, "
            "seeds=[0]); "
            "train_sae('x', SAESpec('topk', {'k': 4}), 0, cfg, src, sys.argv[1], meta, "
            "progress=False)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "created before the flush mode was set" in out.stderr
    assert not (tmp_path / "run").exists()


def test_source_dimension_mismatch(tmp_path):
    spec, cfg = SAESpec(variant="topk", params={"k": 4}), tcfg()
    train_sae("t", spec, 0, cfg, synthetic_source(), tmp_path / "a", META, progress=False,
              stop_after_steps=3)
    before = (tmp_path / "a" / CHECKPOINT).read_bytes()
    with pytest.raises(ConfigError, match="d_model 8"):
        train_sae("t", spec, 0, cfg, synthetic_source(d=8), tmp_path / "a", META, progress=False)
    assert (tmp_path / "a" / CHECKPOINT).read_bytes() == before
    train_sae("t", spec, 0, tcfg(tokens=64 * 2), synthetic_source(), tmp_path / "b", META,
              progress=False)
    with pytest.raises(ConfigError, match="d_model 8"):  # a finished SAE
        train_sae("t", spec, 0, tcfg(tokens=64 * 2), synthetic_source(d=8), tmp_path / "b",
                  META, progress=False)
    with pytest.raises(ConfigError, match="eval source"):
        train_sae("t", spec, 0, cfg, synthetic_source(), tmp_path / "c", META,
                  eval_source=synthetic_source(d=8), progress=False)


# --------------------------------------------------------------------------- smoke cache


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke profile, shrunk (one layer, ~4.5k train tokens), with its clean cache."""
    raw = yaml.safe_load((REPO_ROOT / "profiles" / "smoke.yaml").read_text())
    raw["cache"].update(layers=[1], train_tokens=4000, eval_tokens=1000, shard_sequences=16)
    del raw["ablations"], raw["cross_layer"]  # notebooks 03/04 settings: not used here
    raw["corpus"]["max_articles"] = 150
    raw["train"].update(batch_size=128, tokens=128 * 40, log_every=5, lr_warmup_steps=3,
                        seeds=[0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATM_REPRO_RUNS", str(tmp_path_factory.mktemp("runs")))
        profile = from_dict(Profile, raw)
        cache = ActivationCache.open(build_cache(profile, progress=False))
        yield profile, cache


SMOKE_SPECS = {
    "standard": SAESpec(variant="standard", params={"l1_coefficient": 1.0}),
    "topk": SAESpec(variant="topk", params={"k": 16}),
    "batchtopk": SAESpec(variant="batchtopk", params={"k": 16}),
    "jumprelu": SAESpec(variant="jumprelu", params={"l0_coefficient": 0.1}),
    "atm": SAESpec(variant="atm", params={"warmup_steps": 10}),
    "matryoshka": SAESpec(variant="matryoshka", params={"k": 16}),
}


def test_every_variant_learns_on_smoke_cache(smoke, tmp_path):
    """40 steps each: the reconstruction error falls for every variant."""
    profile, cache = smoke
    assert set(SMOKE_SPECS) == set(VARIANTS)
    train, evals = cache.source(1, "train"), cache.source(1, "eval")
    meta = SAEMeta(model_name=cache.manifest.model, hook_name="blocks.1.hook_resid_post",
                   layer=1, context_size=32, dataset_path="wiki-vital")
    for name, spec in SMOKE_SPECS.items():
        result = train_sae(name, spec, 0, profile.train, train, tmp_path / name, meta,
                           eval_source=evals, progress=False)
        log = read_log(tmp_path / name)
        assert log[-1]["mse"] < 0.8 * log[0]["mse"], name
        assert result.metrics["fvu"] < 0.9, name
        assert result.metrics["l0"] > 0 and result.metrics["n_tokens"] == len(evals)
        assert result.metrics["tokens_per_s"] > 0


def test_train_profile_on_smoke_cache(smoke):
    base, cache = smoke
    raw = {**yaml.safe_load((REPO_ROOT / "profiles" / "smoke.yaml").read_text())}
    del raw["ablations"], raw["cross_layer"], raw["scale"]
    profile = from_dict(Profile, {
        **raw, "cache": {**raw["cache"], "layers": [1], "train_tokens": 4000,
                         "eval_tokens": 1000, "shard_sequences": 16},
        "corpus": {**raw["corpus"], "max_articles": 150},
        "train": {**raw["train"], "batch_size": 128, "tokens": 128 * 6, "seeds": [0, 1],
                  "saes": {"tk": {"variant": "topk", "params": {"k": 8}},
                           "mreg": {"variant": "batchtopk", "params": {"k": 8},
                                    "token_masked": True}}}})
    assert run_dir(profile) == run_dir(base)
    with pytest.raises(ConfigError, match="masked cache"):
        train_profile(profile, cache, progress=False)
    with pytest.raises(ConfigError, match="unknown SAE name"):
        train_profile(profile, cache, names=["nope"], progress=False)
    results = train_profile(profile, cache, names=["tk"], progress=False)
    assert [(r.name, r.seed, r.status) for r in results] == [("tk", 0, "trained"),
                                                             ("tk", 1, "trained")]
    path = sae_dir(profile, 1, "tk", 1)
    assert results[1].path == path and path.parts[-3:] == ("saes", "L1", "tk-s1")
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    assert cfg["metadata"]["model_name"] == cache.manifest.model
    assert cfg["metadata"]["context_size"] == 32 and cfg["k"] == 8
    assert results[0].metrics["n_tokens"] == cache.n_tokens("eval")
    again = train_profile(profile, cache, names=["tk"], seeds=[1], progress=False)
    assert [r.status for r in again] == ["skipped"]


def test_spec_width_and_tokens_override_the_train_settings(tmp_path):
    """The scale study's specs: a spec's own width and token budget win over train's."""
    source, cfg = synthetic_source(), tcfg(tokens=64 * 10)
    spec = SAESpec(variant="topk", params={"k": 4}, width=2 * F, tokens=64 * 15)
    result = train_sae("t", spec, 0, cfg, source, tmp_path, META, progress=False)
    assert load_sae(tmp_path).cfg.d_sae == 2 * F
    assert result.steps == 15 and read_log(tmp_path)[-1]["step"] == 15


@pytest.mark.parametrize("variant,params", [("topk", {"k": 4}), ("atm", {"warmup_steps": 3})])
def test_bfloat16_training_autocasts_the_step_and_keeps_float32_state(tmp_path, variant,
                                                                       params, monkeypatch):
    """train.dtype bfloat16: the SAE's forward runs under bfloat16 autocast (its
    matmuls give bfloat16), while weights, gradients and Adam state stay float32;
    the result is close to, not equal to, float32 training."""
    seen = []
    original = VARIANTS[variant].training_forward

    def spy(self, x_BD, ctx):
        seen.append((torch.is_autocast_enabled("cpu"), (x_BD @ self.W_enc).dtype))
        return original(self, x_BD, ctx)

    monkeypatch.setattr(VARIANTS[variant], "training_forward", spy)
    spec, source = SAESpec(variant=variant, params=params), synthetic_source()
    runs = {}
    for dtype in ("float32", "bfloat16"):
        seen.clear()
        out = tmp_path / dtype
        runs[dtype] = train_sae(variant, spec, 0, tcfg(dtype=dtype), source, out, META,
                                progress=False)
        expect = (True, torch.bfloat16) if dtype == "bfloat16" else (False, torch.float32)
        assert set(seen) == {expect}
        ckpt = checkpoint(out)
        assert all(v.dtype == torch.float32 for v in ckpt["sae"].values()
                   if v.is_floating_point())
        assert all(t.dtype == torch.float32 for s in ckpt["optimizer"]["state"].values()
                   for t in s.values() if torch.is_tensor(t) and t.is_floating_point())
    a, b = load_sae(tmp_path / "float32"), load_sae(tmp_path / "bfloat16")
    assert not torch.equal(a.W_enc, b.W_enc)
    torch.testing.assert_close(a.W_dec, b.W_dec, rtol=0, atol=0.1)
    assert runs["bfloat16"].metrics["fvu"] == pytest.approx(runs["float32"].metrics["fvu"],
                                                           abs=0.05)
    assert runs["bfloat16"].metrics["key"]["train"]["dtype"] == "bfloat16"


def test_snapshot_is_the_sae_a_shorter_run_finishes_with(tmp_path):
    """A run of 8 steps with a snapshot after 4 saves, at step 4, exactly the SAE a
    4-step run of the same recipe finishes with (no lr decay, so the two schedules
    agree up to there): same weights, same core summary, so it evaluates like a
    finished SAE; ``runs.discover`` lists it as the run's snapshot."""
    source = synthetic_source(n=400)
    base = dict(batch_size=20, lr_decay_frac=0.0, lr_warmup_steps=2, log_every=2)
    spec = SAESpec(variant="atm", params={"warmup_steps": 1, "l1_coefficient": 0.01})
    short = train_sae("atm", spec, 0, tcfg(tokens=80, **base), source, tmp_path / "short",
                      META, progress=False)
    longer = train_sae("atm", spec, 0, tcfg(tokens=160, snapshot_tokens=[80, 160, 400], **base),
                       source, tmp_path / "long", META, progress=False)
    snap = snapshot_dir(tmp_path / "long", 80)
    assert sorted(p.name for p in snap.parent.iterdir()) == ["t80"]  # 160, 400: not mid-run
    a, b = load_sae(tmp_path / "short"), load_sae(snap)
    for name, tensor in a.inference_tensors().items():
        assert torch.equal(tensor, b.inference_tensors()[name]), name
    snap_metrics = read_metrics(snap)
    assert snap_metrics["steps"] == 4 and snap_metrics["tokens"] == 80
    for key in ("l0", "mse", "explained_variance"):
        assert snap_metrics[key] == short.metrics[key]
    assert snap_metrics["key"] != longer.metrics["key"]  # a result key of its own
    assert not torch.equal(load_sae(tmp_path / "long").W_dec, b.W_dec)
