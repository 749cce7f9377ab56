"""DDPM's equations against independent float64 references, its sampler, its U-Net and a smoke run."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from evals.config import resolve
from evals.record import load_record
from evals.tier_runner import run_one
from evals.spec import load_spec
from reproductions.ddpm import ddpm
from reproductions.ddpm.diffusion import GaussianDiffusion
from reproductions.ddpm.unet import UNet

T, B1, BT = 1000, 1e-4, 0.02


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(T, B1, BT).double()


def np_schedule():
    betas = B1 + (BT - B1) * np.arange(T) / (T - 1)
    abar = np.cumprod(1.0 - betas)
    return betas, abar


def test_schedule_is_linear_and_its_cumulative_products(diffusion):
    betas, abar = np_schedule()
    assert diffusion.betas[0].item() == pytest.approx(1e-4) and diffusion.betas[-1].item() == pytest.approx(0.02)
    np.testing.assert_allclose(diffusion.betas.numpy(), betas, rtol=1e-6)
    np.testing.assert_allclose(diffusion.alphas_cumprod.numpy(), abar, rtol=1e-5)
    assert abar[-1] < 1e-4  # x_T is (nearly) pure noise: the paper's L_T ~ 1e-5 bits/dim


def test_q_sample_is_eq4_closed_form_and_matches_the_chained_forward_process(diffusion):
    _, abar = np_schedule()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 3, 3, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    i = torch.tensor([0, 9, 499, 999])
    got = diffusion.q_sample(x0, i, eps)
    want = np.sqrt(abar[i.numpy()])[:, None, None, None] * x0.numpy() + np.sqrt(1 - abar[i.numpy()])[:, None, None, None] * eps.numpy()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)

    # eq. (2) applied t times, by Monte Carlo: mean sqrt(abar_t) x0, variance 1 - abar_t (eq. 4)
    betas, _ = np_schedule()
    rng = np.random.default_rng(0)
    x = np.full(100_000, 0.7)
    for t in range(200):
        x = np.sqrt(1 - betas[t]) * x + np.sqrt(betas[t]) * rng.standard_normal(x.shape)
    assert x.mean() == pytest.approx(math.sqrt(abar[199]) * 0.7, abs=1e-2)
    assert x.var() == pytest.approx(1 - abar[199], rel=2e-2)


@pytest.mark.parametrize("t", [2, 10, 500, 1000])
def test_posterior_is_bayes_rule_on_the_two_gaussians(diffusion, t):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): the product of two Gaussians in x_{t-1}."""
    betas, abar = np_schedule()
    beta, abar_t, abar_prev = betas[t - 1], abar[t - 1], abar[t - 2]
    x0, xt = np.array([0.3, -0.8]), np.array([1.1, 0.2])
    prior_var, lik_var = 1 - abar_prev, beta  # x_{t-1} | x_0 ~ N(sqrt(abar_{t-1}) x_0, 1 - abar_{t-1}); x_t | x_{t-1} ~ N(sqrt(alpha_t) x_{t-1}, beta_t)
    precision = 1 / prior_var + (1 - beta) / lik_var
    var = 1 / precision
    mean = var * (math.sqrt(abar_prev) * x0 / prior_var + math.sqrt(1 - beta) * xt / lik_var)
    got_mean, got_var = diffusion.q_posterior(torch.tensor(x0), torch.tensor(xt), torch.tensor([t - 1, t - 1]))
    np.testing.assert_allclose(got_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(got_var.numpy(), [var, var], rtol=1e-5)


def test_posterior_at_t1_is_x0(diffusion):
    mean, var = diffusion.q_posterior(torch.tensor([0.4]), torch.tensor([-2.0]), torch.tensor([0]))
    assert mean.item() == pytest.approx(0.4) and var.item() == 0.0


def test_unclipped_mean_is_algorithm_2(diffusion):
    betas, abar = np_schedule()
    gen = torch.Generator().manual_seed(1)
    xt = torch.randn(3, 1, 2, 2, generator=gen, dtype=torch.float64)
    eps = torch.randn(xt.shape, generator=gen, dtype=torch.float64)
    i = torch.tensor([5, 400, 999])
    got = diffusion.p_mean(lambda x, t: eps, xt, i, clip_x0=False)
    b, a = betas[i.numpy()][:, None, None, None], abar[i.numpy()][:, None, None, None]
    want = (xt.numpy() - b / np.sqrt(1 - a) * eps.numpy()) / np.sqrt(1 - b)  # eq. (11)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_l_simple_is_zero_for_the_true_noise(diffusion):
    """With one data point c, eps is recoverable from (x_t, t) by eq. (4): that oracle has zero loss."""
    c = torch.full((256, 1, 4, 4), 0.25, dtype=torch.float64)
    sa, s1a = diffusion.sqrt_alphas_cumprod, diffusion.sqrt_one_minus_alphas_cumprod

    def oracle(x, i):
        return (x - sa[i].view(-1, 1, 1, 1) * 0.25) / s1a[i].view(-1, 1, 1, 1)

    assert diffusion.loss(oracle, c, torch.Generator().manual_seed(0)).item() < 1e-12
    assert diffusion.loss(lambda x, i: torch.zeros_like(x), c, torch.Generator().manual_seed(0)).item() == pytest.approx(1.0, abs=0.1)


def test_ancestral_sampling_recovers_a_gaussian_data_distribution(diffusion):
    """Data x_0 ~ N(m, s^2): the exact eps-predictor is E[eps | x_t] (Gaussian conditioning), and
    T = 1000 steps of Algorithm 2 with it must give back (nearly) N(m, s^2)."""
    m, s = 0.3, 0.4
    sa, s1a = diffusion.sqrt_alphas_cumprod, diffusion.sqrt_one_minus_alphas_cumprod

    def eps_star(x, i):
        a, b = sa[i].view(-1, 1, 1, 1), s1a[i].view(-1, 1, 1, 1)
        return b * (x - a * m) / (a ** 2 * s ** 2 + b ** 2)

    gen = torch.Generator().manual_seed(0)
    x0, _ = diffusion.p_sample_loop(eps_star, (20_000, 1, 1, 1), gen, torch.device("cpu"), clip_x0=False)
    x0 = x0.double()
    assert x0.mean().item() == pytest.approx(m, abs=0.02)
    assert x0.std().item() == pytest.approx(s, rel=0.05)


def tiny_config(**kw) -> ddpm.Config:
    base = dict(dataset="digits", image_size=8, T=20, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                groups=4, dropout=0.0, grid=4)
    return ddpm.Config(**{**base, **kw})


def test_sampler_shapes_range_and_determinism(tmp_path):
    torch.manual_seed(0)
    model = ddpm.build(tiny_config())
    with torch.no_grad():  # untrained nets output 0 (zero-initialised last layers): give them some weights
        for p in model.ema.parameters():
            p.normal_(0, 0.1)
    a = model.sample(5, torch.Generator().manual_seed(3))
    b = model.sample(5, torch.Generator().manual_seed(3))
    c = model.sample(5, torch.Generator().manual_seed(4))
    assert a.shape == (5, 1, 8, 8) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    images, kept = model.trajectory(5, torch.Generator().manual_seed(3), keep=(20, 10, 0))
    assert sorted(kept) == [0, 10, 20] and torch.equal(images, a) and kept[20].shape == a.shape
    model.save(tmp_path / "m.safetensors")
    again = ddpm.build(tiny_config()).load(tmp_path / "m.safetensors")
    assert torch.equal(again.sample(5, torch.Generator().manual_seed(3)), a)


def test_paper_unet_has_35_7m_parameters_and_dry_runs(tmp_path):
    cfg = ddpm.Config(data_root=str(tmp_path / "nowhere"))
    model = ddpm.build(cfg)
    # the paper's 35.7M; also diffusers' UNet2DModel count for the same configuration
    assert model.num_parameters() == 35_746_307
    missing = ddpm.required_data(cfg)
    assert len(missing) == 1 and str(tmp_path / "nowhere" / "cifar-10-batches-py") in missing[0]
    out = ddpm.dry_run_step(model, cfg)
    assert math.isfinite(out["loss"]) and out["grad_norm"] > 0


def test_unet_attention_only_where_asked():
    net = UNet(1, 8, 8, (1, 2), 1, (4,), 0.0, 4)
    attn = [type(a).__name__ for level in net.down for a in level.attn]
    assert attn == ["Identity", "AttnBlock"]  # 8x8 level, then the 4x4 one


def test_smoke_run_through_the_harness(run_opts):
    job = resolve(load_spec("ddpm"), "smoke", "ours", 1)
    rec = load_record(run_one(job, run_opts))
    assert rec.status == "ok", rec.error
    assert {"fid", "fid_real_floor", "fid_noise_baseline", "kid", "isc"} <= set(rec.metrics)
    assert rec.metrics["fid_real_floor"] < rec.metrics["fid_noise_baseline"]
    assert rec.evaluations[0].protocol["extractor"] == "digits-cnn" and len(rec.evaluations[0].protocol["extractor_sha256"]) == 64
    run_dir = run_opts.runs / "ddpm" / "smoke" / rec.run_id
    assert Image.open(run_dir / "samples.png").size[0] > 48
    strip = Image.open(run_dir / "denoising.png")
    assert strip.size[0] > 10 * 48  # 11 columns: x_T, ..., x_0
    assert rec.curves["loss"] and dataclasses.asdict(job.config)["T"] == 50
