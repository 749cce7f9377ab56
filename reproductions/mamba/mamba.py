"""Mamba (arXiv 2312.00752) on the synthetic tasks of Section 4.1: selective copying (Table 1)
and induction heads (Table 2), with the S6 layer or its LTI ablation inside the Mamba block.

- `scan.py`: the SSM, its discretisation (eq. 4) and recurrence (eq. 2), the selective scan
  (Algorithm 2) with a hand-written backward pass that recomputes states instead of saving them,
  and the LTI convolution (eq. 3) for the ablation (Algorithm 1);
- `model.py`: the Mamba block (Figure 3) and the stacked model, with the recurrent step;
- this module: `Config`, `build`, `train` for the synthetic tasks, whose data come from
  `evals.tasks.sequence_tasks` (the evaluator `sequence_accuracy` draws its held-out sequences
  from the same generators).

Training: AdamW, linear warm-up then cosine decay, fresh random sequences every step (Appendix
E.1), and for selective copying a length curriculum: the noise length grows linearly from
`curriculum_start` to `length` over the first `curriculum_steps` steps (the prototype found that
without it neither layer leaves chance at this scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evals.contract import RunContext, SafetensorsModule
from evals.tasks import sequence_tasks
from reproductions.common.training import restore, snapshot
from reproductions.mamba.model import MambaConfig, MambaLM


@dataclass
class Config:
    """The mini tier's selective-copying run by default."""

    task: str = "selective_copying"   # selective_copying | induction_heads (evals/tasks/sequence_tasks.py)
    n_data: int = 16                  # data tokens (copying: vocabulary n_data + 2; induction: n_data)
    n_memorize: int = 8               # K, tokens to copy (selective copying)
    length: int = 128                 # training sequence length (copying: before the K markers)
    curriculum_start: int = 0         # > 0: start at this length and grow to `length` linearly ...
    curriculum_steps: int = 0         # ... over these steps (multiples of 8)
    # the model (Figure 3; the authors' defaults)
    d_model: int = 64
    n_layer: int = 2
    d_state: int = 16                 # N
    expand: int = 2                   # E
    d_conv: int = 4
    selective: bool = True            # False: the LTI ablation (Delta, B, C parameters, Algorithm 1)
    chunk: int = 64
    # optimisation
    steps: int = 4000
    batch_size: int = 8
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    log_every: int = 50
    eval_every: int = 250             # held-out accuracy at the training length, for the curve
    eval_sequences: int = 128


class SequenceAgent(SafetensorsModule):
    """The trained model with the `SequenceModel` capability (evals/contract.py)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.lm = MambaLM(model_config(cfg))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm(tokens)

    @torch.no_grad()
    def next_token_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        device = next(self.parameters()).device
        return self.lm(tokens.to(device))


def model_config(cfg: Config) -> MambaConfig:
    return MambaConfig(vocab_size=sequence_tasks.vocab_size(cfg.task, cfg.n_data), d_model=cfg.d_model,
                       n_layer=cfg.n_layer, d_state=cfg.d_state, expand=cfg.expand, d_conv=cfg.d_conv,
                       selective=cfg.selective, chunk=cfg.chunk)


def build(cfg: Config) -> SequenceAgent:
    return SequenceAgent(cfg)


def length_at(step: int, cfg: Config) -> int:
    """The curriculum: from curriculum_start to length, linearly over curriculum_steps, in steps of 8."""
    if cfg.curriculum_start <= 0 or step >= cfg.curriculum_steps:
        return cfg.length
    grown = cfg.curriculum_start + (cfg.length - cfg.curriculum_start) * step / cfg.curriculum_steps
    return min(cfg.length, max(cfg.curriculum_start, int(grown) // 8 * 8))


def lr_at(step: int, cfg: Config) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def batch(cfg: Config, n: int, length: int, generator: torch.Generator):
    return sequence_tasks.generate(cfg.task, n, length, generator, n_data=cfg.n_data, n_memorize=cfg.n_memorize)


def token_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    scored = targets != sequence_tasks.IGNORE
    return ((logits.argmax(-1) == targets) & scored).sum().item() / scored.sum().item()


def train(cfg: Config, run: RunContext) -> SequenceAgent:
    agent = build(cfg).to(run.device)
    decay = [p for n, p in agent.named_parameters() if p.dim() >= 2 and "A_log" not in n]
    rest = [p for n, p in agent.named_parameters() if not (p.dim() >= 2 and "A_log" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    batches = torch.Generator().manual_seed(run.seed)
    held_x, held_y = batch(cfg, cfg.eval_sequences, cfg.length, torch.Generator().manual_seed(999))
    held_x, held_y = held_x.to(run.device), held_y.to(run.device)
    parts, step = {"agent": agent, "opt": opt, "batches": batches}, 0
    if (state := run.resume_state()) is not None:
        step = restore(state, parts)["step"]
    run.progress(cfg.steps)
    while step < cfg.steps:
        # ALGO LOGIC: one step on fresh sequences at the curriculum's length
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        length = length_at(step, cfg)
        x, y = batch(cfg, cfg.batch_size, length, batches)
        x, y = x.to(run.device), y.to(run.device)
        agent.train()
        logits = agent(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=sequence_tasks.IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        # TRY NOT TO MODIFY: logging, held-out curve, checkpoints
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, train_loss=loss.item(), train_accuracy=token_accuracy(logits.detach(), y),
                    length=float(length), grad_norm=grad_norm.item(), lr=lr_at(step - 1, cfg))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            agent.eval()
            run.log(step, heldout_accuracy=token_accuracy(agent.next_token_logits(held_x), held_y))
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    agent.eval()
    return agent


def dry_run_step(agent: SequenceAgent, cfg: Config) -> dict[str, float]:
    x, y = batch(cfg, 2, min(cfg.length, 32), torch.Generator().manual_seed(0))
    loss = F.cross_entropy(agent(x).flatten(0, 1), y.flatten(), ignore_index=sequence_tasks.IGNORE)
    loss.backward()
    torch.optim.AdamW(agent.parameters(), lr=cfg.lr).step()
    return {"loss": loss.item()}


def data_fingerprint(cfg: Config) -> str:
    return (f"{cfg.task} generated by evals/tasks/sequence_tasks.py: n_data={cfg.n_data}, "
            f"n_memorize={cfg.n_memorize}, length={cfg.length}, fresh sequences each step from the run's seed")
