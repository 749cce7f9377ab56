"""DeepSeek-R1 (arXiv 2501.12948): group relative policy optimisation (GRPO) with rule-based
rewards, from a small supervised ("cold start") model, on generated arithmetic.

The paper's equations, as this module implements them (Section 2.2.1; GRPO is from DeepSeekMath,
arXiv 2402.03300, eqs. 3-4, whose per-token form every implementation follows):

- eq. (1), the GRPO objective, for a question q and a group of G outputs o_1..o_G sampled from
  the old policy:
      J(theta) = E[ 1/G sum_i 1/|o_i| sum_t ( min(rho_it A_i, clip(rho_it, 1 - eps, 1 + eps) A_i)
                                            - beta D_KL(pi_theta || pi_ref) ) ],
      rho_it = pi_theta(o_it | q, o_i,<t) / pi_theta_old(o_it | q, o_i,<t)            (`grpo_loss`)
- eq. (2), the KL penalty by the unbiased, always non-negative estimator (Schulman's k3):
      D_KL(pi_theta || pi_ref) = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1          (`k3_kl`)
- eq. (3), the group-relative advantage, which replaces PPO's learned value function:
      A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)                                 (`group_advantages`)
- Section 2.2.2, rule-based rewards: an accuracy reward (the answer in its tags is right) and a
  format reward (thinking and answer inside their tags); no neural reward model
  (`evals.tasks.arithmetic`, `rewards`).

Training has two phases, one run: supervised fine-tuning of the project's GPT
(`reproductions/transformer/gpt.py`) on worked traces (R1's cold start, Section 2.3.1), then,
from that checkpoint, which becomes pi_ref, either GRPO (`method: grpo`) or, as the control, the
same supervised training continued for as many steps on as many sequences per step (`method:
sft`). The returned agent keeps both the trained policy and its starting point, so the
`arithmetic_pass` evaluator scores the start beside the end.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evals.contract import RunContext
from evals.tasks import arithmetic
from reproductions.common.tied_head import TiedHeadModule
from reproductions.common.training import restore, snapshot
from reproductions.transformer.gpt import GPT, GPTConfig

IGNORE = -100


@dataclass
class ColdStartConfig:
    """The task, the model and the supervised cold start: what s1 (`reproductions/s1`) builds on."""

    # the task (evals/tasks/arithmetic.py)
    min_operands: int = 3
    max_operands: int = 6
    max_operand: int = 9
    max_group: int = 3                # a worked trace's step adds 1..max_group operands at once
    # the model: the project's GPT, character-level
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    max_new_tokens: int = 64          # the longest completion sampled
    # phase 1: supervised fine-tuning on worked traces (the cold start)
    sft_steps: int = 500
    sft_batch: int = 32
    sft_lr: float = 1e-3
    sft_min_lr: float = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0


@dataclass
class Config(ColdStartConfig):
    """The mini tier by default."""

    # phase 2: GRPO, or the supervised control for the same steps and sequences per step
    method: str = "grpo"              # grpo | sft
    rl_steps: int = 200
    prompts_per_step: int = 8         # questions per step
    group_size: int = 8               # G, outputs sampled per question
    rl_lr: float = 5e-5
    beta: float = 0.04                # KL coefficient (DeepSeekMath's 0.04)
    clip_eps: float = 0.2             # epsilon of the clipped ratio
    inner_steps: int = 1              # mu, policy updates per batch of samples (DeepSeekMath: 1)
    temperature: float = 1.0          # sampling temperature of the rollouts
    accuracy_weight: float = 1.0      # reward = accuracy_weight * accuracy + format_weight * format
    format_weight: float = 1.0
    # logging
    log_every: int = 10
    eval_every: int = 50              # held-out curve: greedy and sampled accuracy, thinking length
    eval_problems: int = 64


# -- the GRPO objective ------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Eq. (3): each reward normalised by its group's mean and standard deviation. `rewards`
    (questions, G); a group whose rewards are all equal gets advantage 0 (TRL's eps 1e-4 and
    unbiased std)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Eq. (2), per token: pi_ref/pi - log(pi_ref/pi) - 1 from log-probabilities (>= 0, and its
    expectation under pi is KL(pi || pi_ref))."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, clip_eps: float, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """-J of eq. (1) for a batch of outputs: `logp`, `old_logp`, `ref_logp`, `mask` (outputs, T)
    per token of each output, `advantages` (outputs,) one per output (eq. 3). Each output's
    tokens are averaged (1/|o_i|), then the outputs (1/G, and over questions)."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    kl = k3_kl(logp, ref_logp)
    per_token = surrogate - beta * kl
    m = mask.to(per_token.dtype)
    lengths = m.sum(dim=1).clamp(min=1)
    objective = ((per_token * m).sum(dim=1) / lengths).mean()
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > clip_eps).to(m.dtype)
        stats = {"kl": ((kl * m).sum(1) / lengths).mean().item(), "clip_frac": ((clipped * m).sum() / m.sum()).item()}
    return -objective, stats


# -- sampling and scoring with the GPT ----------------------------------------------------------
def pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """Next tokens from logits (n, vocab): argmax at temperature 0, else nucleus sampling (the
    smallest set of tokens whose probability reaches top_p) at that temperature. Draws on the CPU
    from `generator`, whatever the model's device."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(dim=-1) - sorted_p < top_p   # the first token is always kept
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)


@torch.no_grad()
def sample(model: GPT, prompts: torch.Tensor, max_new_tokens: int, temperature: float, top_p: float,
           generator: torch.Generator) -> torch.Tensor:
    """Completions (n, <= max_new_tokens) of left-padded prompts (n, P), with the GPT's key/value
    cache; a completion is padded after its end-of-sequence token, and sampling stops when all
    have ended."""
    caches = [{} for _ in model.blocks]
    feed, out = prompts, []
    done = torch.zeros(prompts.size(0), dtype=torch.bool, device=prompts.device)
    for _ in range(max_new_tokens):
        nxt = pick(model(feed, caches=caches)[0][:, -1, :], temperature, top_p, generator)
        nxt = torch.where(done, torch.full_like(nxt, arithmetic.PAD_ID), nxt)
        out.append(nxt)
        done |= nxt == arithmetic.EOS_ID
        if bool(done.all()):
            break
        feed = nxt[:, None]
    return torch.stack(out, dim=1)


def completion_mask(completions: torch.Tensor) -> torch.Tensor:
    """The tokens of each completion up to and including its first end-of-sequence token."""
    eos = (completions == arithmetic.EOS_ID).long()
    return (eos.cumsum(dim=1) - eos) == 0


def token_logprobs(model: GPT, seqs: torch.Tensor, start: int) -> torch.Tensor:
    """log pi(seqs[:, t] | seqs[:, :t]) for t >= start: (n, T - start)."""
    logits = model(seqs[:, :-1])[0][:, start - 1:]
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, seqs[:, start:, None]).squeeze(-1)


def texts_of(completions: torch.Tensor) -> list[str]:
    """Each completion's text up to (not including) its end-of-sequence token."""
    texts = []
    for row in completions.tolist():
        end = row.index(arithmetic.EOS_ID) if arithmetic.EOS_ID in row else len(row)
        texts.append(arithmetic.decode(row[:end]))
    return texts


def rewards(problems: list[arithmetic.Problem], texts: list[str], cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule-based reward of each output (Section 2.2.2), and its accuracy part alone."""
    acc = torch.tensor([arithmetic.accuracy_reward(p, t) for p, t in zip(problems, texts)])
    fmt = torch.tensor([arithmetic.format_reward(t) for t in texts])
    return cfg.accuracy_weight * acc + cfg.format_weight * fmt, acc


# -- the agent ---------------------------------------------------------------------------------
def gpt_config(cfg: Config) -> GPTConfig:
    width = arithmetic.prompt_width(cfg.max_operands, cfg.max_operand)
    return GPTConfig(vocab_size=len(arithmetic.VOCAB), block_size=width + cfg.max_new_tokens, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd)


class Solver:
    """A GPT that answers arithmetic prompts (the `Reasoner` capability, evals/contract.py)."""

    def __init__(self, gpt: GPT, cfg: Config):
        self.gpt, self.cfg = gpt, cfg
        self.width = arithmetic.prompt_width(cfg.max_operands, cfg.max_operand)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.gpt.parameters()).device
        rows = []
        for p in prompts:
            ids = arithmetic.encode(p)
            if len(ids) > self.width:
                raise ValueError(f"r1: prompt {p!r} is longer than the model's prompt width {self.width}")
            rows.append([arithmetic.PAD_ID] * (self.width - len(ids)) + ids)
        return torch.tensor(rows, dtype=torch.long, device=device)

    def complete(self, prompts: list[str], temperature: float, top_p: float, generator: torch.Generator,
                 max_new_tokens: int) -> list[str]:
        was_training = self.gpt.training
        self.gpt.eval()
        out = sample(self.gpt, self.encode_prompts(prompts), min(max_new_tokens, self.cfg.max_new_tokens),
                     temperature, top_p, generator)
        self.gpt.train(was_training)
        return texts_of(out)

    def starting_point(self) -> None:
        return None


class R1Agent(TiedHeadModule):
    """The trained policy and the checkpoint it started from (pi_ref): scored side by side."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.policy = GPT(gpt_config(cfg))
        self.reference = copy.deepcopy(self.policy).requires_grad_(False)

    def complete(self, prompts, temperature, top_p, generator, max_new_tokens) -> list[str]:
        return Solver(self.policy, self.cfg).complete(prompts, temperature, top_p, generator, max_new_tokens)

    def starting_point(self) -> Solver:
        return Solver(self.reference, self.cfg)

    def num_parameters(self) -> int:
        return self.policy.num_parameters()


def build(cfg: Config) -> R1Agent:
    if cfg.method not in ("grpo", "sft"):
        raise ValueError(f"config field 'method': {cfg.method!r} is not one of ['grpo', 'sft']")
    return R1Agent(cfg)


# -- training ----------------------------------------------------------------------------------
def problems_of(cfg: Config, n: int, generator: torch.Generator) -> list[arithmetic.Problem]:
    return arithmetic.sample_problems(n, generator, cfg.min_operands, cfg.max_operands, cfg.max_operand)


def sft_batch(cfg: Config, n: int, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt + worked completion + end-of-sequence, right-padded: (inputs, targets), the loss on
    the completion tokens only."""
    width = arithmetic.prompt_width(cfg.max_operands, cfg.max_operand)
    length = width + cfg.max_new_tokens
    seqs = torch.full((n, length), arithmetic.PAD_ID, dtype=torch.long)
    targets = torch.full((n, length), IGNORE, dtype=torch.long)
    for i, p in enumerate(problems_of(cfg, n, generator)):
        answer = arithmetic.encode(arithmetic.worked_completion(p, cfg.max_group, generator)) + [arithmetic.EOS_ID]
        if len(answer) > cfg.max_new_tokens:
            raise ValueError(f"r1: a worked completion of {len(answer)} tokens exceeds max_new_tokens={cfg.max_new_tokens}")
        row = arithmetic.padded_prompt(p, width) + answer
        seqs[i, :len(row)] = torch.tensor(row)
        targets[i, width:len(row)] = torch.tensor(answer)
    used = int((targets != IGNORE).sum(0).nonzero().max()) + 1   # cut the padding every row has
    return seqs[:, :used - 1].to(device), targets[:, 1:used].to(device)


def sft_step(policy: GPT, opt, cfg: Config, generator: torch.Generator, device, n: int) -> float:
    x, y = sft_batch(cfg, n, generator, device)
    logits = policy(x)[0]
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
    opt.step()
    return loss.item()


def grpo_step(policy: GPT, reference: GPT, opt, cfg: Config, generator: torch.Generator, device) -> dict[str, float]:
    """One GRPO iteration: G outputs for each of the step's questions from the current policy
    (= pi_theta_old), rule-based rewards, group-relative advantages, then `inner_steps` updates
    of eq. (1)."""
    width = arithmetic.prompt_width(cfg.max_operands, cfg.max_operand)
    problems = [p for p in problems_of(cfg, cfg.prompts_per_step, generator) for _ in range(cfg.group_size)]
    prompts = torch.tensor([arithmetic.padded_prompt(p, width) for p in problems], dtype=torch.long, device=device)
    policy.eval()
    completions = sample(policy, prompts, cfg.max_new_tokens, cfg.temperature, 1.0, generator)
    policy.train()
    texts = texts_of(completions.cpu())
    reward, accuracy = rewards(problems, texts, cfg)
    advantages = group_advantages(reward.view(cfg.prompts_per_step, cfg.group_size)).flatten().to(device)
    seqs = torch.cat([prompts, completions], dim=1)
    mask = completion_mask(completions)
    with torch.no_grad():
        ref_logp = token_logprobs(reference, seqs, width)
    old_logp = None
    for _ in range(cfg.inner_steps):
        logp = token_logprobs(policy, seqs, width)
        if old_logp is None:  # the first update is at theta_old itself: rho = 1 (its gradient is not)
            old_logp = logp.detach()
        loss, stats = grpo_loss(logp, old_logp, ref_logp, advantages, mask, cfg.clip_eps, cfg.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        opt.step()
    return {"reward": reward.mean().item(), "accuracy": accuracy.mean().item(),
            "format": sum(map(arithmetic.format_reward, texts)) / len(texts),
            "think_length": sum(map(arithmetic.thinking_length, texts)) / len(texts),
            "completion_length": mask.sum(1).float().mean().item(), "loss": loss.item(),
            "grad_norm": grad_norm.item(), **stats}


def heldout_curve(policy: GPT, cfg: Config, problems: list[arithmetic.Problem]) -> dict[str, float]:
    """Greedy and sampled (temperature 1) accuracy and thinking length on fixed held-out problems."""
    solver = Solver(policy, cfg)
    prompts = [p.prompt for p in problems]
    greedy = solver.complete(prompts, 0.0, 1.0, torch.Generator().manual_seed(0), cfg.max_new_tokens)
    sampled = solver.complete(prompts, 1.0, 1.0, torch.Generator().manual_seed(0), cfg.max_new_tokens)
    n = len(problems)
    return {"heldout_greedy": sum(arithmetic.accuracy_reward(p, t) for p, t in zip(problems, greedy)) / n,
            "heldout_sampled": sum(arithmetic.accuracy_reward(p, t) for p, t in zip(problems, sampled)) / n,
            "heldout_think_length": sum(map(arithmetic.thinking_length, sampled)) / n}


def lr_at(step: int, cfg: Config) -> float:
    """Supervised phase: linear warm-up, then cosine decay from sft_lr to sft_min_lr; its
    continuation (the control) stays at sft_min_lr."""
    if step < cfg.warmup_steps:
        return cfg.sft_lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.sft_steps - cfg.warmup_steps))
    return cfg.sft_min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.sft_lr - cfg.sft_min_lr)


def train(cfg: Config, run: RunContext) -> R1Agent:
    agent = build(cfg).to(run.device)
    policy, reference = agent.policy, agent.reference
    sft_opt = torch.optim.AdamW(policy.parameters(), lr=cfg.sft_lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    rl_opt = torch.optim.AdamW(policy.parameters(), lr=cfg.rl_lr, betas=(0.9, 0.99), weight_decay=0.0)
    data = torch.Generator().manual_seed(run.seed)
    held = problems_of(cfg, cfg.eval_problems, torch.Generator().manual_seed(777))
    parts, step = {"agent": agent, "sft_opt": sft_opt, "rl_opt": rl_opt, "data": data}, 0
    if (state := run.resume_state()) is not None:
        step = restore(state, parts)["step"]
    total = cfg.sft_steps + cfg.rl_steps
    run.progress(total)
    while step < total:
        # ALGO LOGIC: supervised steps (phase 1, and the control's phase 2), or a GRPO step
        if step == cfg.sft_steps:   # the end of the cold start: its weights become pi_ref
            reference.load_state_dict(policy.state_dict())
        policy.train()
        if step < cfg.sft_steps or cfg.method == "sft":
            for group in sft_opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            # the control's steps: as many sequences as a GRPO step samples
            n = cfg.sft_batch if step < cfg.sft_steps else cfg.prompts_per_step * cfg.group_size
            values = {"sft_loss": sft_step(policy, sft_opt, cfg, data, run.device, n)}
        else:
            values = grpo_step(policy, reference, rl_opt, cfg, data, run.device)
        step += 1
        # TRY NOT TO MODIFY: logging, held-out curve, checkpoints
        if step % cfg.log_every == 0 or step == total:
            run.log(step, **values)
        if step % cfg.eval_every == 0 or step == total:
            run.log(step, **heldout_curve(policy, cfg, held))
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    if step == cfg.sft_steps:       # no second phase: the start is the end
        reference.load_state_dict(policy.state_dict())
    agent.eval()
    return agent


def dry_run_step(agent: R1Agent, cfg: Config) -> dict[str, float]:
    small = Config(**{**cfg.__dict__, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": cfg.max_new_tokens})
    opt = torch.optim.AdamW(agent.policy.parameters(), lr=cfg.rl_lr)
    return grpo_step(agent.policy, agent.reference, opt, small, torch.Generator().manual_seed(0),
                     next(agent.parameters()).device)


def data_fingerprint(cfg: Config) -> str:
    return (f"arithmetic generated by evals/tasks/arithmetic.py: {cfg.min_operands}-{cfg.max_operands} operands in "
            f"0..{cfg.max_operand}, worked traces of 1..{cfg.max_group} additions a step, fresh problems each step "
            "from the run's seed")
