"""The full tier: GPT-2 (124M) training with our FlashAttention kernels or naive attention
(the GPT of `reproductions/transformer` with its `attend` extension point), logging tokens/s.

Data (`data`): `fineweb`, the full tier's, reads GPT-2-tokenised FineWeb shards under `data_root`
in order (`evals/tasks/fineweb.py`; the paper trains on OpenWebText, of which FineWeb is the
modern counterpart with the same tokenizer), so a run of a few thousand steps never repeats a
token; `code` is `transformer/lm.py`'s standard-library corpus (2.6M BPE tokens of training
text: 2,000 steps of 8 x 1,024 tokens go over it six times, and a 124M model then overfits
until its validation loss is meaningless, as a run on an H200 showed). Training is nanoGPT's in
both (`lm.optimizer`, `lm.lr_at`, gradient clipping).

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

from evals.tasks import code_corpus, fineweb
from reproductions.common.training import restore, snapshot
from reproductions.flash_attention.flash import flash_attention
from reproductions.transformer import lm
from reproductions.transformer.gpt import GPT, GPTConfig

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
    data: str = "code"              # code: lm.py's corpus | fineweb: GPT-2 token shards under data_root (tokenizer gpt2)
    data_root: str = "data/fineweb10B"


def _on_fineweb(cfg: Config) -> bool:
    if cfg.data not in ("code", "fineweb"):
        raise ValueError(f"config field 'data': {cfg.data!r} is not one of ['code', 'fineweb']")
    if (cfg.data == "fineweb") != (cfg.tokenizer == "gpt2"):
        raise ValueError(f"config field 'tokenizer': {cfg.tokenizer!r} with data {cfg.data!r} (FineWeb's shards are "
                         "GPT-2 token ids: data fineweb goes with tokenizer gpt2, and only with it)")
    return cfg.data == "fineweb"


class GPT2TokenLM(lm.LanguageModel):
    """lm.py's model of GPT-2 token ids: FineWeb's shards are tokenised already, and GPT-2's
    tokenizer itself is not bundled, so `tokenizer` is None."""

    tokenizer = None


def build(cfg: Config) -> lm.LanguageModel:
    """lm.py's GPT; on FineWeb with GPT-2's vocabulary."""
    if not _on_fineweb(cfg):
        return lm.build(cfg)
    gcfg = GPTConfig(vocab_size=fineweb.VOCAB_SIZE, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                     n_embd=cfg.n_embd, ffn_hidden=cfg.ffn_hidden, dropout=cfg.dropout)
    if cfg.position not in cfg.positions or cfg.attention not in cfg.attentions:
        raise ValueError(f"config fields 'position', 'attention': {cfg.position!r}, {cfg.attention!r} are not among "
                         f"{sorted(cfg.positions)}, {sorted(cfg.attentions)}")
    return GPT2TokenLM(GPT(gcfg, position=cfg.positions[cfg.position](gcfg), attend=cfg.attentions[cfg.attention]), cfg)


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


def train_on_fineweb(cfg: Config, run) -> lm.LanguageModel:
    """nanoGPT's loop (lm.py's optimiser, schedule and clipping) over FineWeb's train shards in order."""
    model = build(cfg).to(run.device)
    opt = lm.optimizer(model, cfg)
    parts = {"model": model, "opt": opt}
    step = 0
    if (resumed := run.resume_state()) is not None:
        step = restore(resumed, parts)["step"]
    batches = fineweb.train_windows(cfg.data_root, cfg.batch_size, cfg.block_size, start_batch=step)
    run.progress(cfg.steps)
    model.train()
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = lm.lr_at(step, cfg)
        x, y = next(batches)
        _, loss = model(x.to(run.device), y.to(run.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, train_loss=loss.item(), grad_norm=grad_norm.item(), lr=lm.lr_at(step - 1, cfg))
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    model.eval()
    return model


def train(cfg: Config, run) -> lm.LanguageModel:
    """Training under the config's autocast. Logs tokens/s over the whole loop and from the first
    logged step on (without the first steps' kernel compilation and allocator warm-up)."""
    on_fineweb = _on_fineweb(cfg)
    if not on_fineweb:
        code_corpus.token_split("train", cfg.tokenizer, cfg.bpe_vocab_size, cfg.val_percent)  # tokenised before the clock
    clock = _Clock(run)
    start = time.perf_counter()
    with autocast(cfg, torch.device(run.device)):  # the forward passes; backward follows their dtypes
        model = train_on_fineweb(cfg, clock) if on_fineweb else lm.train(cfg, clock)
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


def required_data(cfg: Config) -> list[str]:
    return fineweb.missing(cfg.data_root) if _on_fineweb(cfg) else lm.required_data(cfg)


def data_fingerprint(cfg: Config) -> str:
    return fineweb.fingerprint(cfg.data_root) if _on_fineweb(cfg) else lm.data_fingerprint(cfg)


__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
