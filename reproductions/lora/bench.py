"""LoRA's benchmark: a fine-tuning step of the mini tier's GPT (`finetune.Config()`'s defaults are
the mini tier's) with our LoRA against the same GPT with Hugging Face PEFT's LoRA (same rank,
alpha, targets, batch and optimiser), timed in the same process on the same batches. Merged
against unmerged inference latency is measured in every run by the `lora_merge` evaluator."""

from __future__ import annotations

import dataclasses
import time

import torch

from reproductions.lora import finetune, peft_baseline
from reproductions.transformer import lm

STEPS, WARMUP = 30, 5


def _step_time(adapt, cfg: finetune.Config) -> float:
    """Seconds per AdamW step of LoRA fine-tuning (forward, backward, update), median of STEPS."""
    torch.manual_seed(0)
    gpt = lm.build(cfg).gpt
    adapt(gpt, cfg, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([p for p in gpt.parameters() if p.requires_grad], lr=cfg.ft_lr)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(256, (cfg.ft_batch_size, cfg.block_size + 1), generator=g) for _ in range(STEPS + WARMUP)]
    times = []
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        _, loss = gpt(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run() -> list[dict]:
    cfg = dataclasses.replace(finetune.Config(), method="lora", rank=4)
    ours = _step_time(finetune.adapt_ours, cfg)
    peft = _step_time(peft_baseline.adapt_peft, cfg)
    shape = f"{cfg.n_layer} layers, d {cfg.n_embd}, r {cfg.rank} on {cfg.targets}, {cfg.ft_batch_size} x {cfg.block_size} tokens"
    tokens = cfg.ft_batch_size * cfg.block_size
    return [{"benchmark": f"LoRA fine-tuning step ({shape})", "ours": tokens / ours, "baseline": tokens / peft,
             "unit": "tokens/s (vs PEFT LoRA)", "ratio": peft / ours}]
