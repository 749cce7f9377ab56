"""Muon's benchmark: one optimiser step of ours against PyTorch's `torch.optim.Muon` on the hidden
matrices of the mini tier's GPT (4 layers, d 128: 16 matrices of 128 x 128 and 8 of 128 x 512 /
512 x 128), the same gradients, timed in the same process. torch iterates in bfloat16 (fixed);
ours is timed in bfloat16 (like for like) and in float32 (what the mini tier runs on the CPU,
where bfloat16 products are slow). Then the wall-clock side of the mini tier's claim, measured in
one process so that the machine's load is the same for both: a training step of the mini GPT
(8 x 128 tokens) with our Muon + AdamW against AdamW alone, and from it the time Muon's 195 steps
take against AdamW's 300."""

from __future__ import annotations

import time

import torch

from evals.tasks import code_corpus
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


def _train_step_ms(optimizer: str, steps: int = 20, warmup: int = 3) -> float:
    """Mean wall time of a training step of the mini tier's GPT with the given optimiser."""
    cfg = muon_lm.Config(**SHAPE, batch_size=8, optimizer=optimizer, lr=0.003, min_lr=0.0003, warmup_steps=5, steps=300)
    torch.manual_seed(0)
    model = muon_lm.build(cfg)
    opts = muon_lm.optimizers(model, cfg)
    data = code_corpus.token_split("train")
    gen = torch.Generator().manual_seed(0)
    for i in range(steps + warmup):
        if i == warmup:
            start = time.perf_counter()
        muon_lm.set_learning_rates(opts, i, cfg)
        x, y = code_corpus.random_batch(data.tokens, cfg.batch_size, cfg.block_size, gen)
        _, loss = model(x, y)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt in opts:
            opt.step()
    return 1000 * (time.perf_counter() - start) / steps


def run() -> list[dict]:
    hp = dict(lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.0)
    torch_ms = _step_ms(lambda ps: torch.optim.Muon(ps, adjust_lr_fn="original", **hp))
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        ours = _step_ms(lambda ps: Muon(ps, scaling="original", ns_dtype=dtype, **hp))
        name = str(dtype).removeprefix("torch.")
        rows.append({"benchmark": f"Muon step, GPT 4 layers d 128 (24 matrices), ours in {name}", "ours": ours,
                     "baseline": torch_ms, "unit": "ms per step (vs torch.optim.Muon, bfloat16)", "ratio": torch_ms / ours})
    muon_ms, adamw_ms = _train_step_ms("muon"), _train_step_ms("adamw")
    rows.append({"benchmark": "GPT training step (mini tier, 8 x 128 tokens), Muon + AdamW vs AdamW", "ours": muon_ms,
                 "baseline": adamw_ms, "unit": "ms per step (vs AdamW)", "ratio": adamw_ms / muon_ms})
    rows.append({"benchmark": "time to AdamW's final loss: Muon 195 steps vs AdamW 300 steps (mini tier)",
                 "ours": 195 * muon_ms / 1000, "baseline": 300 * adamw_ms / 1000, "unit": "s (vs AdamW)",
                 "ratio": (300 * adamw_ms) / (195 * muon_ms)})
    return rows
