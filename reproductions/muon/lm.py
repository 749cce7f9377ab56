"""Muon against AdamW on the project's GPT (`reproductions/transformer`), trained on the code corpus.

The model, its tokenizer and its checkpoint format are the Transformer paper's `lm.build`; what
changes is the optimiser, chosen by `optimizer`:

- `muon`: our Muon (`muon.py`, (M1)-(M5)) on the 2-D weights of the transformer blocks, AdamW on the
  rest (token and position embeddings with the tied output head, LayerNorm gains), as the post
  prescribes ('Empirical considerations');
- `muon_torch`: the same split with PyTorch's own `torch.optim.Muon` on the hidden matrices (the
  peer: same hyper-parameters; its Newton-Schulz runs in bfloat16, which it does not let one change);
- `adamw`: AdamW on everything (`transformer/lm.py`'s optimiser: weight decay on matrices only).

Every arm has the same loop: random windows of the train split drawn from a generator seeded by
the run's seed, linear warm-up then cosine decay (`transformer.lm.lr_at`; Muon's rate follows the
same multiplier), gradient clipping, and every `eval_every` steps the loss on the first
`eval_tokens` tokens of the validation split (the `heldout_loss` curve, for the plot of loss against
steps and wall-clock time; the scored number is the `lm_loss` evaluator's). `train_seconds` is the
time spent in optimisation steps alone (a timing: `verify_timings`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.tasks import code_corpus
from reproductions.common.training import restore, snapshot
from reproductions.muon import hybrid
from reproductions.muon.hybrid import MuonSettings
from reproductions.transformer import lm
from reproductions.transformer.lm import build, data_fingerprint, required_data  # noqa: F401 (the module's hooks)


@dataclass
class Config(MuonSettings, lm.Config):
    """The GPT of `transformer/lm.py` and the Muon settings of `hybrid.py`; `lr`, `min_lr`, `beta2`
    and `weight_decay` are AdamW's (for every parameter in the `adamw` arm, for the embeddings and
    gains in the Muon arms)."""

    eval_every: int = 25            # the heldout_loss curve
    eval_tokens: int = 16384


def optimizers(model: nn.Module, cfg: Config) -> list[torch.optim.Optimizer]:
    """The arm's optimisers: [AdamW on everything] (transformer/lm.py's: weight decay on matrices
    only), or [Muon on the blocks' matrices, AdamW on the rest with the same decay rule]."""
    hybrid.check(cfg)
    if cfg.optimizer == "adamw":
        return [lm.optimizer(model, cfg)]

    def adamw(rest):
        groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))

    return hybrid.hybrid(model, cfg, adamw)


def set_learning_rates(opts: list[torch.optim.Optimizer], step: int, cfg: Config) -> float:
    """`transformer.lm.lr_at`'s warm-up and cosine decay for AdamW; Muon's rate is `muon_lr` times the
    same multiplier."""
    lr = lm.lr_at(step, cfg)
    hybrid.set_rates(opts, lr / cfg.lr, cfg.lr, cfg)
    return lr


@torch.no_grad()
def heldout_loss(model: nn.Module, tokens: torch.Tensor, n_tokens: int, block_size: int, device) -> float:
    """Mean cross-entropy over the first `n_tokens` of the validation split, in lm_loss's windows."""
    model.eval()
    total, count = 0.0, 0
    for x, y in code_corpus.fixed_windows(tokens, n_tokens, block_size, 16):
        logits = model(x.to(device))[0]
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten().to(device), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


def train(cfg: Config, run) -> lm.LanguageModel:
    data = code_corpus.token_split("train", cfg.tokenizer, cfg.bpe_vocab_size, cfg.val_percent)
    val = code_corpus.token_split("validation", cfg.tokenizer, cfg.bpe_vocab_size, cfg.val_percent)
    model = build(cfg).to(run.device)
    opts = optimizers(model, cfg)
    batches = torch.Generator().manual_seed(run.seed)
    parts = {"model": model, "batches": batches, **{f"opt{i}": o for i, o in enumerate(opts)}}
    step, train_ms = 0, 0
    if (resumed := run.resume_state()) is not None:
        counters = restore(resumed, parts)
        step, train_ms = counters["step"], counters["train_ms"]
    run.progress(cfg.steps)
    model.train()
    if step == 0:
        run.log(0, heldout_loss=heldout_loss(model, val.tokens, cfg.eval_tokens, cfg.block_size, run.device),
                train_seconds=0.0)
    while step < cfg.steps:
        # ALGO LOGIC: one step of the arm's optimiser ------------------------------------------
        t0 = time.perf_counter()
        lr = set_learning_rates(opts, step, cfg)
        x, y = code_corpus.random_batch(data.tokens, cfg.batch_size, cfg.block_size, batches)
        _, loss = model(x.to(run.device), y.to(run.device))
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt in opts:
            opt.step()
        loss_value = loss.item()    # waits for the step on an accelerator
        step += 1
        train_ms += round(1000 * (time.perf_counter() - t0))
        # TRY NOT TO MODIFY: logging, evaluation curve, checkpoints --------------------------------
        logs = {}
        if step % cfg.log_every == 0 or step == cfg.steps:
            logs.update(train_loss=loss_value, grad_norm=grad_norm.item(), lr=lr)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            logs.update(heldout_loss=heldout_loss(model, val.tokens, cfg.eval_tokens, cfg.block_size, run.device),
                        train_seconds=train_ms / 1000)
        if logs:
            run.log(step, **logs)
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step, train_ms=train_ms))
    model.eval()
    return model


def dry_run_step(model: lm.LanguageModel, cfg: Config) -> dict[str, float]:
    """One step of the arm's optimisers on a batch of two windows of random tokens."""
    x = torch.randint(model.gpt.cfg.vocab_size, (2, min(cfg.block_size, 64)))
    opts = optimizers(model, cfg)
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    for opt in opts:
        opt.step()
    return {"loss": loss.item()}
