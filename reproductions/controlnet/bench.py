"""ControlNet benchmark at the mini tier's size, ours against diffusers in the same process: a
training step of the control branch (the condition encoder, the trainable copy of the encoder and
middle block, the zero convolutions; forward, backward of the residuals' sum, Adam) on a batch of
8x8x4 latents with 32x32 edge maps. Ours: `control.ControlNet.control` on the mini U-Net (the
locked base is not run); theirs: diffusers' `ControlNetModel` with the same channels (16, 32), one
residual block per level, no attention, 4x downsampling of the condition and a class embedding.
The two compute the same kind of thing at the same width, not the same function: the row times
the implementations, not a numerical match. Alternating repetitions, the fastest kept."""

from __future__ import annotations

import time

import torch

from reproductions.controlnet.control import ControlNet
from reproductions.ldm import ldm

BATCH, STEPS, REPEATS = 32, 10, 3


def _rate(step, x, t, y, c) -> float:
    step(x, t, y, c)
    t0 = time.perf_counter()
    for _ in range(STEPS):
        step(x, t, y, c)
    return STEPS * len(x) / (time.perf_counter() - t0)


def run() -> list[dict]:
    from diffusers import ControlNetModel

    cfg = ldm.Config(dataset="shapes", image_size=32, f=4, ae_ch=16, ae_ch_mult=(1, 2, 2), z_channels=4, ch=16,
                     ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), groups=8)
    torch.manual_seed(0)
    base = ldm.build(cfg)
    ours = ControlNet(base.ema, 1, cfg.f, "full")
    theirs = ControlNetModel(in_channels=cfg.z_channels, conditioning_channels=1, block_out_channels=(16, 32),
                             down_block_types=("DownBlock2D", "DownBlock2D"), mid_block_type="UNetMidBlock2D",
                             layers_per_block=1, norm_num_groups=8, num_class_embeds=base.num_classes + 1,
                             conditioning_embedding_out_channels=(16, 32, 64), cross_attention_dim=8)
    opt_ours = torch.optim.Adam([p for p in ours.parameters() if p.requires_grad], 1e-4)
    opt_theirs = torch.optim.Adam(theirs.parameters(), 1e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, cfg.z_channels, 8, 8, generator=gen)
    t = torch.randint(cfg.T, (BATCH,), generator=gen)
    y = torch.randint(base.num_classes, (BATCH,), generator=gen)
    c = (torch.rand(BATCH, 1, 32, 32, generator=gen) > 0.9).float()
    context = torch.zeros(BATCH, 1, 8)

    def ours_step(x, t, y, c):
        residuals, mid = ours.control(x, t, y, c)
        loss = sum(r.sum() for r in residuals) + mid.sum()
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def theirs_step(x, t, y, c):
        out = theirs(x, t, encoder_hidden_states=context, controlnet_cond=c, class_labels=y, return_dict=True)
        loss = sum(r.sum() for r in out.down_block_res_samples) + out.mid_block_res_sample.sum()
        opt_theirs.zero_grad(set_to_none=True)
        loss.backward()
        opt_theirs.step()

    ours.train(), theirs.train()
    r_ours, r_theirs = [], []
    for _ in range(REPEATS):
        r_ours.append(_rate(ours_step, x, t, y, c))
        r_theirs.append(_rate(theirs_step, x, t, y, c))
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_theirs = sum(p.numel() for p in theirs.parameters())
    return [{"benchmark": f"ControlNet control-branch train step, batch {BATCH}, 8x8x4 latents, 32x32 edges, "
                          f"{n_ours / 1e3:.0f}k trainable params (diffusers {n_theirs / 1e3:.0f}k)",
             "ours": max(r_ours), "baseline": max(r_theirs), "unit": "samples/s (vs diffusers ControlNetModel)",
             "ratio": max(r_ours) / max(r_theirs)}]
