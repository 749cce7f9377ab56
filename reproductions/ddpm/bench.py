"""DDPM benchmarks at the mini tier's size, ours against diffusers' UNet2DModel of the same
configuration (same parameter count), in the same process:
- training images per second of a step of L_simple (batch 64, Adam, gradient clipping);
- sampling time per image of T = 1000 ancestral steps: our sampler and U-Net against diffusers'
  DDPMScheduler (linear betas, sigma_t^2 = beta_t, x_0 clipped: the same sampler) and UNet2DModel.
Each measurement is repeated, alternating ours and theirs, and the fastest repetition is kept,
so that a busy machine penalises both alike."""

from __future__ import annotations

import time

import torch
import torch.nn as nn

from reproductions.ddpm import ddpm

TRAIN_STEPS, SAMPLES, REPEATS = 20, 16, 2


def diffusers_unet(cfg: ddpm.Config):
    """UNet2DModel with our block layout: attention at the resolutions in cfg.attn_resolutions."""
    from diffusers import UNet2DModel

    res = [cfg.image_size // 2 ** k for k in range(len(cfg.ch_mult))]
    attn = [r in cfg.attn_resolutions for r in res]
    return UNet2DModel(
        sample_size=cfg.image_size, in_channels=1, out_channels=1, layers_per_block=cfg.num_res_blocks,
        block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult), norm_num_groups=cfg.groups, dropout=cfg.dropout,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=None,
    )


def _train_rate(step, cfg: ddpm.Config) -> float:
    x0 = torch.rand(cfg.batch_size, 1, cfg.image_size, cfg.image_size) * 2 - 1
    step(x0)  # warm-up
    t0 = time.perf_counter()
    for _ in range(TRAIN_STEPS):
        step(x0)
    return TRAIN_STEPS * cfg.batch_size / (time.perf_counter() - t0)


def _ours_step(cfg: ddpm.Config):
    model = ddpm.build(cfg)
    opt = torch.optim.Adam(model.unet.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)

    def step(x0):
        loss = model.diffusion.loss(model.unet, x0, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.unet.parameters(), cfg.grad_clip)
        opt.step()
    return step


def _diffusers_step(cfg: ddpm.Config, unet, scheduler):
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)

    def step(x0):
        t = torch.randint(0, cfg.T, (len(x0),), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        loss = (unet(scheduler.add_noise(x0, eps, t), t).sample - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()
    return step


@torch.no_grad()
def _diffusers_sample(cfg: ddpm.Config, unet, scheduler, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    scheduler.set_timesteps(cfg.T)
    x = torch.randn(n, 1, cfg.image_size, cfg.image_size, generator=gen)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x, generator=gen).prev_sample
    return x


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(cfg: ddpm.Config) -> list[dict]:
    """`cfg`: the mini tier's config (scripts/bench.py resolves it from the spec)."""
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    ours = ddpm.build(cfg).eval()
    theirs = diffusers_unet(cfg).eval()
    n_ours, n_theirs = ours.num_parameters(), sum(p.numel() for p in theirs.parameters())
    scheduler = DDPMScheduler(num_train_timesteps=cfg.T, beta_start=cfg.beta_1, beta_end=cfg.beta_T,
                              beta_schedule="linear", variance_type="fixed_large", clip_sample=True)
    ours_step, theirs_step = _ours_step(cfg), _diffusers_step(cfg, diffusers_unet(cfg), scheduler)
    train_ours, train_theirs, sample_ours, sample_theirs = [], [], [], []
    for _ in range(REPEATS):
        train_ours.append(_train_rate(ours_step, cfg))
        train_theirs.append(_train_rate(theirs_step, cfg))
        sample_ours.append(_seconds(lambda: ours.sample(SAMPLES, torch.Generator().manual_seed(0))) / SAMPLES)
        sample_theirs.append(_seconds(lambda: _diffusers_sample(cfg, theirs, scheduler, SAMPLES)) / SAMPLES)
    size = f"{n_ours / 1e3:.0f}k params (diffusers {n_theirs / 1e3:.0f}k)"
    return [
        {"benchmark": f"DDPM train step, mini U-Net {size}, batch {cfg.batch_size}", "ours": max(train_ours),
         "baseline": max(train_theirs), "unit": "images/s (vs diffusers UNet2DModel)", "ratio": max(train_ours) / max(train_theirs)},
        {"benchmark": f"DDPM sampling, T={cfg.T} steps, batch {SAMPLES}, {size}", "ours": min(sample_ours),
         "baseline": min(sample_theirs), "unit": "s/image (vs diffusers DDPMScheduler + UNet2DModel)",
         "ratio": min(sample_theirs) / min(sample_ours)},
    ]
