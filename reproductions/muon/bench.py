"""Muon's benchmark: one optimiser step of ours against PyTorch's `torch.optim.Muon` on the hidden
matrices of the mini tier's GPT (4 layers, d 128: 16 matrices of 128 x 128 and 8 of 128 x 512 /
512 x 128), the same gradients, timed in the same process. torch iterates in bfloat16 (fixed);
ours is timed in bfloat16 (like for like) and in float32 (what the mini tier runs on the CPU,
where bfloat16 products are slow)."""

from __future__ import annotations

import time

import torch

from reproductions.muon import lm as muon_lm
from reproductions.muon.muon import Muon, split_parameters

STEPS, WARMUP = 12, 2
SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=128)


def _step_ms(make) -> float:
    torch.manual_seed(0)
    hidden, _ = split_parameters(muon_lm.build(muon_lm.Config(**SHAPE)))
    gen = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=gen) for p in hidden] for _ in range(STEPS)]
    opt = make(hidden)
    for i, step_grads in enumerate(grads):
        if i == WARMUP:
            start = time.perf_counter()
        for p, g in zip(hidden, step_grads):
            p.grad = g
        opt.step()
    return 1000 * (time.perf_counter() - start) / (STEPS - WARMUP)


def run() -> list[dict]:
    hp = dict(lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.0)
    torch_ms = _step_ms(lambda ps: torch.optim.Muon(ps, adjust_lr_fn="original", **hp))
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        ours = _step_ms(lambda ps: Muon(ps, scaling="original", ns_dtype=dtype, **hp))
        name = str(dtype).removeprefix("torch.")
        rows.append({"benchmark": f"Muon step, GPT 4 layers d 128 (24 matrices), ours in {name}", "ours": ours,
                     "baseline": torch_ms, "unit": "ms per step (vs torch.optim.Muon, bfloat16)", "ratio": torch_ms / ours})
    return rows
