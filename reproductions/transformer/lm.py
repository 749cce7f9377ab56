"""The GPT trained on the standard-library code corpus: a paper module of its own (`Config`,
`build`, `train`), used by the Transformer tier's `gpt` arm and reused, with their own positional
scheme, attention or feed-forward block, by RoPE, FlashAttention and Mixtral.

Training is nanoGPT's: AdamW, linear warm-up then cosine decay to `min_lr`, gradient clipping,
random windows of the train split. Under `torchrun` (`repro reproduce ... --nproc N`) every rank
draws the same global batch and trains on its slice of it with DistributedDataParallel, so N
processes compute what one process computes on the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors.torch import load_file, save_file

from evals.tasks import code_corpus
from reproductions.common.training import restore, snapshot
from reproductions.transformer.gpt import (GPT, FFNFactory, GPTConfig, LearnedPositions, NoPositions,
                                           PositionalScheme, SinusoidalPositions, mlp)
from reproductions.transformer.layers import naive_attention, sdpa_attention

POSITIONS: dict[str, Callable[[GPTConfig], PositionalScheme]] = {
    "learned": LearnedPositions, "sinusoidal": SinusoidalPositions, "none": lambda cfg: NoPositions(),
}
ATTENTIONS = {"sdpa": sdpa_attention, "naive": naive_attention}


@dataclass
class Config:
    """A small GPT on the code corpus; the defaults are the mini tier's. A paper that adds a
    positional scheme or an attention function subclasses it and extends `positions` or
    `attentions`, the tables its `position` and `attention` fields name a key of."""

    positions: ClassVar[dict[str, Callable[[GPTConfig], PositionalScheme]]] = POSITIONS
    attentions: ClassVar[dict[str, Callable]] = ATTENTIONS
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    ffn_hidden: int = 0             # 0: 4 * n_embd
    dropout: float = 0.0
    position: str = "learned"       # a key of the module's positional schemes
    attention: str = "sdpa"         # a key of the module's attention functions
    tokenizer: str = "bytes"        # bytes | bpe (trained on the train split)
    bpe_vocab_size: int = 1024
    val_percent: int = 10           # share of files held out for validation
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta2: float = 0.99
    grad_clip: float = 1.0
    log_every: int = 25


class LanguageModel(nn.Module):
    """A GPT with its tokenizer: what the LM evaluators and the lm-eval bridge talk to."""

    def __init__(self, gpt: GPT, cfg: Config):
        super().__init__()
        self.gpt = gpt
        self.tokenizer_name, self.bpe_vocab_size, self.val_percent = cfg.tokenizer, cfg.bpe_vocab_size, cfg.val_percent

    @property
    def tokenizer(self):
        return code_corpus.tokenizer(self.tokenizer_name, self.bpe_vocab_size, self.val_percent)

    @property
    def block_size(self) -> int:
        return self.gpt.cfg.block_size

    def forward(self, idx, targets=None):
        return self.gpt(idx, targets)

    def generate(self, idx, max_new_tokens: int, **kw):
        return self.gpt.generate(idx, max_new_tokens, **kw)

    def num_parameters(self) -> int:
        return self.gpt.num_parameters()

    def save(self, path) -> None:
        state = {k: v for k, v in self.state_dict().items() if k != "gpt.lm_head.weight"}  # tied to wte
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))

    def load(self, path) -> "LanguageModel":
        result = self.load_state_dict(load_file(str(path)), strict=False)
        missing = set(result.missing_keys) - {"gpt.lm_head.weight"}
        if missing or result.unexpected_keys:
            raise KeyError(f"{path}: not this model's checkpoint (missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(result.unexpected_keys)[:5]})")
        return self


def vocab_size(cfg: Config) -> int:
    return code_corpus.tokenizer(cfg.tokenizer, cfg.bpe_vocab_size, cfg.val_percent).vocab_size


def gpt_config(cfg: Config) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size(cfg), block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                     n_embd=cfg.n_embd, ffn_hidden=cfg.ffn_hidden, dropout=cfg.dropout)


def _choose(table: dict, key: str, field: str):
    if key not in table:
        raise ValueError(f"config field '{field}': {key!r} is not one of {sorted(table)}")
    return table[key]


def build(cfg: Config, ffn: FFNFactory = mlp) -> LanguageModel:
    """The GPT for `cfg`, its positional scheme and attention from the tables of cfg's class; a
    paper with its own feed-forward block passes `ffn`."""
    gcfg = gpt_config(cfg)
    gpt = GPT(gcfg, position=_choose(cfg.positions, cfg.position, "position")(gcfg),
              attend=_choose(cfg.attentions, cfg.attention, "attention"), ffn=ffn)
    return LanguageModel(gpt, cfg)


def lr_at(step: int, cfg: Config) -> float:
    """Linear warm-up, then cosine decay from lr to min_lr over the remaining steps (nanoGPT)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * (cfg.lr - cfg.min_lr)


def optimizer(model: nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, biases or gains)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _global_mean(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        x = x.detach().clone()
        dist.all_reduce(x)
        x /= world
    return x


AuxLoss = Callable[[LanguageModel], torch.Tensor]


def train(cfg: Config, run, model: LanguageModel | None = None, aux_loss: AuxLoss | None = None,
          extra_logs: Callable[[LanguageModel], dict[str, float]] | None = None) -> LanguageModel:
    """Train `model` (default: `build(cfg)`) on the train split; `aux_loss(model)` is added to
    the cross-entropy (Mixtral's load-balancing loss), `extra_logs(model)` adds logged scalars."""
    rank, world = _world()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {world} processes")
    data = code_corpus.token_split("train", cfg.tokenizer, cfg.bpe_vocab_size, cfg.val_percent)
    model = (model if model is not None else build(cfg)).to(run.device)
    opt = optimizer(model, cfg)
    batches = torch.Generator().manual_seed(run.seed)  # the same global batches on every rank
    parts = {"model": model, "opt": opt, "batches": batches}
    step = 0
    resumed = run.resume_state()
    if resumed is not None:
        step = restore(resumed, parts)["step"]
    trained = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, find_unused_parameters=aux_loss is not None)
        if step == 0:
            run.log(0, world_size=world)

    run.progress(cfg.steps)
    model.train()
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, y = code_corpus.random_batch(data.tokens, cfg.batch_size, cfg.block_size, batches)
        x, y = x.chunk(world)[rank].to(run.device), y.chunk(world)[rank].to(run.device)
        _, loss = trained(x, y)
        total = loss + aux_loss(model) if aux_loss is not None else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            logs = {"train_loss": _global_mean(loss, world).item(), "grad_norm": grad_norm.item(), "lr": lr_at(step - 1, cfg)}
            if extra_logs is not None:
                logs.update(extra_logs(model))
            run.log(step, **logs)
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    model.eval()
    return model


def data_fingerprint(cfg: Config) -> str:
    return code_corpus.fingerprint(cfg.val_percent) + f", tokenizer {cfg.tokenizer}"


def dry_run_step(model: LanguageModel, cfg: Config) -> dict[str, float]:
    """One AdamW step on a batch of two random windows of random tokens."""
    x = torch.randint(model.gpt.cfg.vocab_size, (2, min(cfg.block_size, 64)))
    opt = optimizer(model, cfg)
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    opt.step()
    return {"loss": loss.item()}


def required_data(cfg: Config) -> list[str]:
    try:
        code_corpus.load_split("validation", cfg.val_percent)
    except (OSError, FileNotFoundError) as e:
        return [f"the Python standard library's source: {e}"]
    return []
