"""LDM benchmarks at the mini tier's size, ours against diffusers in the same process:
- sampling time per image of 50 DDIM steps with guidance 3 (two U-Net passes a step) and the
  decoder: our sampler against diffusers' DDIMScheduler (same timesteps, eta 0), both driving our
  trained-shape U-Net and decoder, so the row times the sampler's own overhead;
- training images per second of a step of the KL autoencoder (L1 + KL, Adam): ours against
  diffusers' AutoencoderKL with the same channels (16, 32, 32; one block per level; 4 latent
  channels, f = 4).
Each measurement is repeated, alternating ours and theirs, and the fastest repetition is kept."""

from __future__ import annotations

import time

import torch

from reproductions.ldm import ldm
from reproductions.ldm.sampling import guided_eps

SAMPLES, AE_STEPS, REPEATS, STEPS, SCALE = 32, 10, 2, 50, 3.0


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@torch.no_grad()
def _diffusers_sample(model: ldm.LDM, scheduler, labels: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    eps = guided_eps(model.ema, labels, model.model.null, SCALE)
    scheduler.set_timesteps(STEPS)
    z = torch.randn(len(labels), model.latent_channels, model.latent_size, model.latent_size, generator=gen)
    for t in scheduler.timesteps:
        z = scheduler.step(eps(z, torch.full((len(labels),), int(t))), t, z, eta=0.0).prev_sample
    return model.from_latent(z)


def _ae_rate(step, cfg: ldm.Config) -> float:
    x = torch.rand(cfg.ae_batch_size, 3, cfg.image_size, cfg.image_size) * 2 - 1
    step(x)
    t0 = time.perf_counter()
    for _ in range(AE_STEPS):
        step(x)
    return AE_STEPS * cfg.ae_batch_size / (time.perf_counter() - t0)


def mini_config() -> ldm.Config:
    """The mini tier's shared config (its latent arm), read from spec.yaml."""
    import dataclasses
    from pathlib import Path

    import yaml

    spec = yaml.safe_load((Path(__file__).with_name("spec.yaml")).read_text())
    fields = {f.name for f in dataclasses.fields(ldm.Config)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["tiers"]["mini"]["config"].items() if k in fields}
    return ldm.Config(**values)


def run() -> list[dict]:
    from diffusers import AutoencoderKL, DDIMScheduler

    cfg = mini_config()

    torch.manual_seed(0)
    model = ldm.build(cfg).eval()
    scheduler = DDIMScheduler(num_train_timesteps=cfg.T, beta_start=cfg.beta_1, beta_end=cfg.beta_T, beta_schedule="linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    labels = torch.arange(SAMPLES) % model.num_classes
    ours_ae = model.autoencoder
    theirs_ae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=cfg.z_channels, norm_num_groups=cfg.groups,
                              block_out_channels=tuple(cfg.ae_ch * m for m in cfg.ae_ch_mult), layers_per_block=1,
                              down_block_types=("DownEncoderBlock2D",) * len(cfg.ae_ch_mult),
                              up_block_types=("UpDecoderBlock2D",) * len(cfg.ae_ch_mult))
    opt_ours, opt_theirs = torch.optim.Adam(ours_ae.parameters(), 1e-3), torch.optim.Adam(theirs_ae.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(0)

    def ours_step(x):
        loss, _ = ours_ae.loss(x, cfg.kl_weight, gen)
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def theirs_step(x):
        q = theirs_ae.encode(x).latent_dist
        rec = theirs_ae.decode(q.sample(generator=gen)).sample
        loss = (x - rec).abs().flatten(1).sum(1).mean() + cfg.kl_weight * q.kl().mean()
        opt_theirs.zero_grad(set_to_none=True)
        loss.backward()
        opt_theirs.step()

    ours_ae.train()
    s_ours, s_theirs, ae_ours, ae_theirs = [], [], [], []
    for _ in range(REPEATS):
        s_ours.append(_seconds(lambda: model.sample_classes(labels, torch.Generator().manual_seed(0), SCALE, "ddim", STEPS)) / SAMPLES)
        s_theirs.append(_seconds(lambda: _diffusers_sample(model, scheduler, labels)) / SAMPLES)
        ae_ours.append(_ae_rate(ours_step, cfg))
        ae_theirs.append(_ae_rate(theirs_step, cfg))
    n_ours, n_theirs = sum(p.numel() for p in ours_ae.parameters()), sum(p.numel() for p in theirs_ae.parameters())
    return [
        {"benchmark": f"LDM sampling, {STEPS} DDIM steps, guidance {SCALE:g}, batch {SAMPLES}, mini U-Net + decoder",
         "ours": min(s_ours), "baseline": min(s_theirs), "unit": "s/image (vs diffusers DDIMScheduler, same networks)",
         "ratio": min(s_theirs) / min(s_ours)},
        {"benchmark": f"KL autoencoder train step, f = {cfg.f}, batch {cfg.ae_batch_size}, {n_ours / 1e3:.0f}k params "
                      f"(diffusers {n_theirs / 1e3:.0f}k)", "ours": max(ae_ours), "baseline": max(ae_theirs),
         "unit": "images/s (vs diffusers AutoencoderKL)", "ratio": max(ae_ours) / max(ae_theirs)},
    ]
