"""The full tier: Mamba-130M language modelling on the Pile (Table 3's smallest row; Section 4.2,
Appendix E.2), on pre-tokenised files under `data_root` (`evals/tasks/token_files.py`:
`train.bin` and `validation.bin`, GPT-NeoX token ids as uint16).

The model is `model.py`'s MambaLM at the paper's 130M configuration (24 layers, d_model 768,
E = 2, N = 16, vocabulary 50,277 padded to 50,280); training follows the paper's "improved
recipe" (Appendix E.2.1): AdamW with betas (0.9, 0.95) and weight decay 0.1, gradient clipping at
1.0, linear warm-up then cosine decay to 1e-5, peak learning rate 5x GPT-3's for the size
(6e-4 x 5 = 3e-3 at 125M), batches of 0.5M tokens (256 x 2048), no biases, RMSNorm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evals.contract import RunContext, SafetensorsModule
from evals.tasks import token_files
from reproductions.common.training import restore, snapshot
from reproductions.mamba.model import MambaConfig, MambaLM


@dataclass
class Config:
    data_root: str = "data/pile"      # train.bin and validation.bin (uint16 GPT-NeoX tokens)
    vocab_size: int = 50277           # GPT-NeoX
    pad_vocab_multiple: int = 8
    d_model: int = 768
    n_layer: int = 24
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    chunk: int = 256
    context: int = 2048
    batch_size: int = 256             # sequences per optimisation step (0.5M tokens)
    micro_batch: int = 16             # sequences per forward pass (gradient accumulation)
    steps: int = 572_205              # 300B tokens / (256 x 2048)
    lr: float = 3e-3
    min_lr: float = 1e-5
    warmup_steps: int = 2000
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    log_every: int = 100


class LanguageModel(SafetensorsModule):
    """MambaLM with the `SequenceModel` capability the token_perplexity evaluator asks for."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.lm = MambaLM(MambaConfig(vocab_size=cfg.vocab_size, pad_vocab_multiple=cfg.pad_vocab_multiple,
                                      d_model=cfg.d_model, n_layer=cfg.n_layer, d_state=cfg.d_state,
                                      expand=cfg.expand, d_conv=cfg.d_conv, chunk=cfg.chunk))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm(idx)

    @torch.no_grad()
    def next_token_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm(tokens.to(next(self.parameters()).device))


def build(cfg: Config) -> LanguageModel:
    return LanguageModel(cfg)


def lr_at(step: int, cfg: Config) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def optimizer(model: LanguageModel, cfg: Config) -> torch.optim.AdamW:
    """Weight decay on matrices, not on norms, biases, A_log, D or the embedding (the authors' recipe)."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.endswith(("A_log", "embedding.weight")) else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.95))


def _loss(model: LanguageModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())


def train(cfg: Config, run: RunContext) -> LanguageModel:
    if cfg.batch_size % cfg.micro_batch:
        raise ValueError(f"batch_size={cfg.batch_size} is not a multiple of micro_batch={cfg.micro_batch}")
    data = token_files.tokens(cfg.data_root, "train")
    model = build(cfg).to(run.device)
    opt = optimizer(model, cfg)
    windows = torch.Generator().manual_seed(run.seed)
    parts, step = {"model": model, "opt": opt, "windows": windows}, 0
    if (state := run.resume_state()) is not None:
        step = restore(state, parts)["step"]
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.device.type == "cuda")
    run.progress(cfg.steps)
    model.train()
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.batch_size // cfg.micro_batch):
            x, y = token_files.random_windows(data, cfg.micro_batch, cfg.context, windows)
            with autocast:
                loss = _loss(model, x.to(run.device), y.to(run.device)) * cfg.micro_batch / cfg.batch_size
            loss.backward()
            total += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, train_loss=total, grad_norm=grad_norm.item(), lr=lr_at(step - 1, cfg))
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    model.eval()
    return model


def dry_run_step(model: LanguageModel, cfg: Config) -> dict[str, float]:
    """One AdamW step on two windows of 64 tokens from the train split."""
    x, y = token_files.random_windows(token_files.tokens(cfg.data_root, "train"), 2, 64, torch.Generator().manual_seed(0))
    loss = _loss(model, x, y)
    loss.backward()
    optimizer(model, cfg).step()
    return {"loss": loss.item()}


def required_data(cfg: Config) -> list[str]:
    return token_files.missing(cfg.data_root)


def data_fingerprint(cfg: Config) -> str:
    return token_files.fingerprint(cfg.data_root)
