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

from evals.tasks import code_corpus
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


class _Clock:
    """The run context, noting the wall time of each step it logs (for the steady-state rate)."""

    def __init__(self, run):
        self._run, self.marks = run, []

    def log(self, step, **values):
        self.marks.append((step, time.perf_counter()))
        return self._run.log(step, **values)

    def __getattr__(self, name):
        return getattr(self._run, name)


def train(cfg: Config, run) -> lm.LanguageModel:
    """`lm.train` under the config's autocast. Logs tokens/s over the whole loop and from the
    first logged step on (without the first steps' kernel compilation and allocator warm-up)."""
    code_corpus.token_split("train", cfg.tokenizer, cfg.bpe_vocab_size, cfg.val_percent)  # tokenised before the clock
    clock = _Clock(run)
    start = time.perf_counter()
    with autocast(cfg, torch.device(run.device)):  # the forward passes; backward follows their dtypes
        model = lm.train(cfg, clock)
    end = time.perf_counter()
    tokens_per_step = cfg.batch_size * cfg.block_size
    rates = {"train_tokens_per_s": cfg.steps * tokens_per_step / (end - start)}
    if len(clock.marks) >= 2:
        (s0, t0), (s1, t1) = clock.marks[0], clock.marks[-1]  # from the first logged step (25) on
        rates["train_tokens_per_s_steady"] = (s1 - s0) * tokens_per_step / (t1 - t0)
    run.log(cfg.steps, **rates)
    return model


def dry_run_step(model: lm.LanguageModel, cfg: Config) -> dict[str, float]:
    """One step on a tiny CPU batch. The Triton kernel needs CUDA tensors, so a model on the CPU (the
    dry run's, on any machine) takes the step with the PyTorch tiled kernel of `flash.py` (the same
    algorithm) in its place."""
    autocast(cfg, torch.device("cpu"))  # checks the precision's name
    if cfg.attention == "triton" and next(model.parameters()).device.type != "cuda":
        for block in model.gpt.blocks:
            block.attn.attend = flash_attention
    return lm.dry_run_step(model, cfg)


__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
