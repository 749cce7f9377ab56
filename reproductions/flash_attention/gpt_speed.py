"""The full tier: GPT-2 (124M) training with our FlashAttention kernels or naive attention
(the GPT of `reproductions/transformer` with its `attend` extension point), logging tokens/s.

Training runs in the paper's precision on a GPU: bf16 autocast (`precision: bf16`), so attention
gets bf16 queries, keys and values (the Triton kernels' tensor-core path, fp32 accumulation) and
naive attention runs as PyTorch runs it under autocast (bf16 products, fp32 softmax). The weights,
the optimiser and the evaluation stay fp32.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from reproductions.flash_attention.flash import flash_attention
from reproductions.transformer import lm
from reproductions.transformer.lm import build, data_fingerprint, required_data

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def _triton(q, k, v, mask=None, causal=False):
    from reproductions.flash_attention.triton_kernel import triton_flash_attention  # needs a GPU (or the interpreter)

    return triton_flash_attention(q, k, v, mask=mask, causal=causal)


@dataclass
class Config(lm.Config):
    """The GPT of `transformer/lm.py`, whose attention functions gain our two kernels."""

    attentions: ClassVar[dict] = {**lm.ATTENTIONS, "flash": flash_attention, "triton": _triton}
    attention: str = "triton"
    precision: str = "fp32"         # fp32 | bf16: autocast of the training steps on a GPU (the paper: mixed precision)


def autocast(cfg: Config, device: torch.device):
    """The training steps' autocast: bf16 on a GPU when the config asks for it, else nothing."""
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"config field 'precision': {cfg.precision!r} is not one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[cfg.precision]
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def train(cfg: Config, run) -> lm.LanguageModel:
    start = time.perf_counter()
    with autocast(cfg, torch.device(run.device)):  # the forward passes; backward follows their dtypes
        model = lm.train(cfg, run)
    run.log(cfg.steps, train_tokens_per_s=cfg.steps * cfg.batch_size * cfg.block_size / (time.perf_counter() - start))
    return model


def dry_run_step(model: lm.LanguageModel, cfg: Config) -> dict[str, float]:
    """One step on a tiny CPU batch. Without a GPU the Triton kernel cannot run, so the step uses
    the PyTorch tiled kernel of `flash.py` (the same algorithm) in its place."""
    autocast(cfg, torch.device("cpu"))  # checks the precision's name
    if cfg.attention == "triton" and not torch.cuda.is_available():
        for block in model.gpt.blocks:
            block.attn.attend = flash_attention
    return lm.dry_run_step(model, cfg)


__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
