"""Direct Preference Optimization (Rafailov et al., arXiv 2305.18290) against PPO-based RLHF, in the
paper's controlled-sentiment setting (Section 6.1) at toy scale: a generated review language with a
known sentiment reward (`evals/tasks/reviews.py`), the project's GPT.

The paper's equations, as this module implements them:
- eq. (1), the Bradley-Terry preference model, and eq. (2), the reward model's loss
      L_R(r_phi) = -E[ log sigmoid(r_phi(x, y_w) - r_phi(x, y_l)) ]
  (the RLHF paper's preference loss, imported: `reproductions.rlhf.rlhf.preference_loss`);
- eq. (3), the RL fine-tuning objective, max E[r_phi(x, y)] - beta KL(pi_theta || pi_ref), optimised
  by PPO as in the paper's baseline: the per-token reward -beta_KL (log pi - log pi_ref) plus the
  reward model's score at the last token (Ziegler et al.'s shaping), GAE and the clipped surrogate
  (imported from the project's PPO: `reproductions.ppo.ppo.gae`, `clipped_surrogate`);
- eq. (4), the optimum of (3): pi_r(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x), hence eq. (5),
  r(x, y) = beta log pi_r(y|x) / pi_ref(y|x) + beta log Z(x)                   (`implicit_reward`);
- eq. (7), the DPO loss
      L_DPO(pi_theta; pi_ref) = -E[ log sigmoid( beta log pi_theta(y_w|x)/pi_ref(y_w|x)
                                                - beta log pi_theta(y_l|x)/pi_ref(y_l|x) ) ]
                                                                                      (`dpo_loss`).

One run does the paper's pipeline for one seed (Section 6.1, "Controlled sentiment generation"):
supervised fine-tuning of the GPT on reviews (pi_SFT = pi_ref), preference pairs of two SFT
samples per prompt labelled by the ground-truth reward, then from the same SFT model and the same
pairs (a) DPO at each beta of `dpo_betas` and (b) a Bradley-Terry reward model followed by PPO at
each KL coefficient of `ppo_kl_coefs`. Checkpoints along each fine-tuning run are the points of the
reward-KL plane (Figure 2, left) that the `reward_kl_frontier` evaluator measures. The compute of
each method is counted (FLOPs: 2 N per token forward, 6 N forward and backward, N the parameters of
the model that runs) and its CPU time measured; the shared SFT and pairs are charged to neither.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.contract import RunContext
from evals.tasks import reviews
from reproductions.common.tied_head import TiedHeadModule
from reproductions.ppo.ppo import clipped_surrogate, gae, probability_ratio
from reproductions.rlhf.rlhf import preference_loss
from reproductions.transformer.gpt import GPT, GPTConfig

P = reviews.PROMPT_LEN


@dataclass
class Config:
    """The mini tier by default."""

    # the model: the project's GPT on the review language's words
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    # supervised fine-tuning on reviews (pi_SFT, which is pi_ref)
    sft_steps: int = 600
    sft_batch: int = 64
    sft_lr: float = 1e-3
    # preference pairs: two SFT samples per prompt, labelled by the true reward (ties dropped)
    pair_prompts: int = 2000
    # DPO (eq. 7)
    dpo_betas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.3, 1.0])
    dpo_epochs: int = 2
    dpo_batch: int = 64
    dpo_lr: float = 3e-4
    # the reward model (eq. 2): the GPT's trunk from pi_SFT with a scalar head on the last token
    rm_epochs: int = 3
    rm_batch: int = 64
    rm_lr: float = 1e-3
    # PPO (eq. 3 with the per-token KL penalty), from pi_SFT on the reward model's score
    ppo_kl_coefs: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1, 0.3])
    ppo_iterations: int = 60
    ppo_batch: int = 64               # rollouts (prompts) per iteration
    ppo_epochs: int = 4
    ppo_minibatch: int = 32
    ppo_lr: float = 1e-4
    vf_lr: float = 1e-4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_ratio: float = 0.2
    # points on the frontier: checkpoints saved evenly along each fine-tuning run
    checkpoints: int = 3
    log_every: int = 10
    plot_prompts: int = 256           # held-out prompts of the in-run measurement behind the run's frontier plot


# -- the losses ------------------------------------------------------------------------------------
def implicit_reward(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. (5) without the prompt-only term beta log Z(x): beta log pi(y|x) / pi_ref(y|x)."""
    return beta * (logp - ref_logp)


def dpo_loss(chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
             ref_rejected_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. (7), averaged over the pairs: sequence log-probabilities (pairs,) of the preferred and
    dispreferred completions under the policy and under the reference."""
    margin = implicit_reward(chosen_logp, ref_chosen_logp, beta) - implicit_reward(rejected_logp, ref_rejected_logp, beta)
    return -F.logsigmoid(margin).mean()


def reward_model_loss(score_chosen: torch.Tensor, score_rejected: torch.Tensor) -> torch.Tensor:
    """Eq. (2): the Bradley-Terry negative log-likelihood of the labels (RLHF's loss, imported,
    without its random-response noise)."""
    return preference_loss(score_chosen, score_rejected, torch.ones_like(score_chosen), random_response=0.0)


def kl_shaped_rewards(logp: torch.Tensor, ref_logp: torch.Tensor, score: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> torch.Tensor:
    """Eq. (3)'s reward per token as PPO-based RLHF optimises it: -kl_coef (log pi - log pi_ref) at
    every token of the completion, plus the reward model's score at its last token. (n, T)."""
    m = mask.to(logp.dtype)
    rewards = -kl_coef * (logp - ref_logp) * m
    last = (m.sum(1).long() - 1).clamp(min=0)
    return rewards.scatter_add(1, last[:, None], score[:, None].to(rewards.dtype))


# -- the models ------------------------------------------------------------------------------------
def gpt_config(cfg: Config) -> GPTConfig:
    return GPTConfig(vocab_size=len(reviews.VOCAB), block_size=P + reviews.MAX_COMPLETION, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd)


def hidden_states(gpt: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """The GPT's final hidden states (n, T, n_embd), after its last layer norm."""
    out = {}
    hook = gpt.ln_f.register_forward_hook(lambda module, inputs, output: out.__setitem__("h", output))
    try:
        gpt(tokens)
    finally:
        hook.remove()
    return out["h"]


class ScalarHead(nn.Module):
    """A GPT trunk with a scalar head: the reward model (its score at the last token of the
    completion) and PPO's value function (a value at every position), the latter initialised from
    the former (InstructGPT, Ziegler et al.)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gpt = GPT(cfg)
        self.head = nn.Linear(cfg.n_embd, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (cfg.n_embd + 1) ** 0.5)   # TRL's score-head initialisation
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(hidden_states(self.gpt, tokens)).squeeze(-1)

    def score(self, seqs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The value at the last token of each completion (prompt of P tokens, then the completion)."""
        last = P + mask.sum(1).long() - 1
        return self(seqs).gather(1, last[:, None]).squeeze(1)


def sequence_logprobs(gpt: GPT, seqs: torch.Tensor, per_token: bool = False) -> torch.Tensor:
    """log pi(y|x) of completions (summed over their tokens up to <eos>), or per token (n, T)."""
    logits = gpt(seqs[:, :-1])[0][:, P - 1:]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, seqs[:, P:, None]).squeeze(-1)
    logp = logp * reviews.completion_mask(seqs[:, P:]).to(logp.dtype)
    return logp if per_token else logp.sum(1)


@torch.no_grad()
def sample(gpt: GPT, prompts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Prompt + completion (n, P + MAX_COMPLETION) at temperature 1; tokens after <eos> become padding."""
    was = gpt.training
    gpt.eval()
    caches = [{} for _ in gpt.blocks]
    feed, out = prompts, [prompts]
    for _ in range(reviews.MAX_COMPLETION):
        probs = torch.softmax(gpt(feed, caches=caches)[0][:, -1].float(), dim=-1)
        feed = torch.multinomial(probs.cpu(), 1, generator=generator).to(prompts.device)
        out.append(feed)
    gpt.train(was)
    seqs = torch.cat(out, dim=1)
    keep = reviews.completion_mask(seqs[:, P:])
    seqs[:, P:] = torch.where(keep, seqs[:, P:], torch.full_like(seqs[:, P:], reviews.PAD_ID))
    return seqs


# -- the agent -------------------------------------------------------------------------------------
def point_names(cfg: Config) -> list[tuple[str, str]]:
    """(name, method) of every checkpoint the run keeps, in training order."""
    def tag(x: float) -> str:
        return f"{x:g}".replace(".", "p")
    out = [(f"dpo_b{tag(b)}_c{c + 1}", "dpo") for b in cfg.dpo_betas for c in range(cfg.checkpoints)]
    return out + [(f"ppo_kl{tag(k)}_c{c + 1}", "ppo") for k in cfg.ppo_kl_coefs for c in range(cfg.checkpoints)]


COMPUTE_KEYS = ("dpo_flops", "ppo_flops", "dpo_cpu_seconds", "ppo_cpu_seconds")


class FrontierAgent(TiedHeadModule):
    """pi_ref (the SFT model) and every checkpoint of both methods: the `PolicyFamily` capability."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.reference = GPT(gpt_config(cfg)).requires_grad_(False)
        names = point_names(cfg)
        self.methods = dict(names)
        self.points = nn.ModuleDict({n: GPT(gpt_config(cfg)).requires_grad_(False) for n, _ in names})
        self.register_buffer("compute", torch.zeros(len(COMPUTE_KEYS), dtype=torch.float64))

    def frontier_points(self) -> list[str]:
        return list(self.points)

    def point_method(self, name: str) -> str:
        return self.methods[name]

    @torch.no_grad()
    def log_probs(self, name: str, tokens: torch.Tensor) -> torch.Tensor:
        gpt = self.reference if name == "reference" else self.points[name]
        gpt.eval()
        return torch.log_softmax(gpt(tokens)[0].float(), dim=-1)

    def training_compute(self) -> dict[str, float]:
        return dict(zip(COMPUTE_KEYS, self.compute.tolist()))

    def num_parameters(self) -> int:
        return self.reference.num_parameters()


def build(cfg: Config) -> FrontierAgent:
    if not cfg.dpo_betas or not cfg.ppo_kl_coefs:
        raise ValueError("config: dpo_betas and ppo_kl_coefs each need at least one value")
    return FrontierAgent(cfg)


# -- the pipeline ----------------------------------------------------------------------------------
class Meter:
    """Counted FLOPs (2 N per token forward, 6 N forward and backward) and CPU seconds per method."""

    def __init__(self, n_params: int):
        self.n, self.flops, self.seconds = n_params, {"dpo": 0.0, "ppo": 0.0}, {"dpo": 0.0, "ppo": 0.0}

    def forward(self, method: str, tokens: int) -> None:
        self.flops[method] += 2.0 * self.n * tokens

    def train(self, method: str, tokens: int) -> None:
        self.flops[method] += 6.0 * self.n * tokens


def sft(gpt: GPT, cfg: Config, data: torch.Generator, run: RunContext) -> None:
    """Supervised fine-tuning on whole reviews (the paper fine-tunes GPT-2 on IMDb's train split)."""
    opt = torch.optim.AdamW(gpt.parameters(), lr=cfg.sft_lr, betas=(0.9, 0.95), weight_decay=0.0)
    length = P + reviews.MAX_COMPLETION
    for step in range(cfg.sft_steps):
        rows = reviews.reviews(cfg.sft_batch, data)
        x = torch.full((len(rows), length), reviews.PAD_ID, dtype=torch.long)
        y = torch.full((len(rows), length), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            x[i, :len(r)] = torch.tensor(r)
            y[i, :len(r) - 1] = torch.tensor(r[1:])
        x, y = x[:, :-1].to(run.device), y[:, :-1].to(run.device)
        lr = cfg.sft_lr * min(1.0, (step + 1) / 100)
        for group in opt.param_groups:
            group["lr"] = lr
        logits = gpt(x)[0]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % (cfg.log_every * 10) == 0:
            run.log(step + 1, sft_loss=loss.item())


def preference_pairs(gpt: GPT, cfg: Config, data: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two SFT samples per prompt, labelled by the ground-truth reward: (chosen, rejected) rows of
    prompt + completion, pairs with equal rewards dropped."""
    prompts = reviews.prompts(cfg.pair_prompts, data).to(device)
    a, b = sample(gpt, prompts, data), sample(gpt, prompts, data)
    ra = torch.tensor([reviews.reward(r) for r in a.tolist()])
    rb = torch.tensor([reviews.reward(r) for r in b.tolist()])
    keep = (ra != rb).to(device)
    a_wins = (ra > rb).to(device)[:, None]
    chosen, rejected = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
    return chosen[keep], rejected[keep]


def tokens_of(seqs: torch.Tensor) -> int:
    return int(seqs[:, :-1].numel())


def checkpoint_steps(total: int, k: int) -> list[int]:
    """k steps spread evenly over a run of `total` steps, the last one at its end."""
    return sorted({max(1, round(total * (i + 1) / k)) for i in range(k)})


def dpo(agent: FrontierAgent, cfg: Config, beta: float, chosen: torch.Tensor, rejected: torch.Tensor,
        data: torch.Generator, meter: Meter, run: RunContext, names: list[str], offset: int) -> int:
    """DPO from pi_SFT at one beta: `dpo_epochs` passes over the pairs, Adam on eq. (7)."""
    policy = copy.deepcopy(agent.reference).requires_grad_(True).train()
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.dpo_lr)
    with torch.no_grad():   # the reference's log-probabilities, once (TRL's precompute_ref_log_probs)
        ref_c, ref_r = sequence_logprobs(agent.reference, chosen), sequence_logprobs(agent.reference, rejected)
    meter.forward("dpo", 2 * tokens_of(chosen))
    n = chosen.size(0)
    per_epoch = (n + cfg.dpo_batch - 1) // cfg.dpo_batch
    total = cfg.dpo_epochs * per_epoch
    saves = dict(zip(checkpoint_steps(total, cfg.checkpoints), names))
    step = 0
    for _ in range(cfg.dpo_epochs):
        order = torch.randperm(n, generator=data).to(chosen.device)
        for i in range(per_epoch):
            idx = order[i * cfg.dpo_batch:(i + 1) * cfg.dpo_batch]
            lc, lr = sequence_logprobs(policy, chosen[idx]), sequence_logprobs(policy, rejected[idx])
            loss = dpo_loss(lc, lr, ref_c[idx], ref_r[idx], beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            meter.train("dpo", 2 * tokens_of(chosen[idx]))
            step += 1
            if step % cfg.log_every == 0:
                with torch.no_grad():
                    margin = implicit_reward(lc, ref_c[idx], beta) - implicit_reward(lr, ref_r[idx], beta)
                run.log(offset + step, **{f"dpo_loss_b{beta:g}": loss.item(),
                                          f"dpo_accuracy_b{beta:g}": (margin > 0).float().mean().item()})
            if step in saves:
                agent.points[saves[step]].load_state_dict(policy.state_dict())
    return offset + step


def reward_model(agent: FrontierAgent, cfg: Config, chosen: torch.Tensor, rejected: torch.Tensor,
                 data: torch.Generator, meter: Meter, run: RunContext, offset: int) -> tuple[ScalarHead, int]:
    """The Bradley-Terry reward model (eq. 2) from pi_SFT's trunk, on the same pairs as DPO; its
    score then normalised to mean 0 and standard deviation 1 over the pairs' completions."""
    rm = ScalarHead(gpt_config(cfg)).to(chosen.device)
    rm.gpt.load_state_dict(agent.reference.state_dict())
    opt = torch.optim.Adam(rm.parameters(), lr=cfg.rm_lr)
    mask_c, mask_r = reviews.completion_mask(chosen[:, P:]), reviews.completion_mask(rejected[:, P:])
    n, step = chosen.size(0), 0
    per_epoch = (n + cfg.rm_batch - 1) // cfg.rm_batch
    for _ in range(cfg.rm_epochs):
        order = torch.randperm(n, generator=data).to(chosen.device)
        for i in range(per_epoch):
            idx = order[i * cfg.rm_batch:(i + 1) * cfg.rm_batch]
            sc, sr = rm.score(chosen[idx], mask_c[idx]), rm.score(rejected[idx], mask_r[idx])
            loss = reward_model_loss(sc, sr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            meter.train("ppo", 2 * int(chosen[idx].numel()))
            step += 1
            if step % cfg.log_every == 0:
                run.log(offset + step, rm_loss=loss.item(), rm_accuracy=(sc > sr).float().mean().item())
    with torch.no_grad():
        scores = torch.cat([rm.score(chosen, mask_c), rm.score(rejected, mask_r)])
        meter.forward("ppo", 2 * int(chosen.numel()))
        rm.head.bias -= scores.mean()
        rm.head.weight /= scores.std().clamp_min(1e-6)
        rm.head.bias /= scores.std().clamp_min(1e-6)
    return rm.requires_grad_(False).eval(), offset + step


def ppo(agent: FrontierAgent, rm: ScalarHead, cfg: Config, kl_coef: float, data: torch.Generator, meter: Meter,
        run: RunContext, names: list[str], offset: int) -> int:
    """PPO from pi_SFT on the reward model's score with the per-token KL penalty (eq. 3): each
    iteration samples a completion for `ppo_batch` fresh prompts, then `ppo_epochs` passes of
    clipped-surrogate and value updates over minibatches; the value model starts from the reward model."""
    device = next(rm.parameters()).device
    policy = copy.deepcopy(agent.reference).requires_grad_(True).train()
    value = copy.deepcopy(rm).requires_grad_(True).train()
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.ppo_lr)
    vf_opt = torch.optim.Adam(value.parameters(), lr=cfg.vf_lr)
    saves = dict(zip(checkpoint_steps(cfg.ppo_iterations, cfg.checkpoints), names))
    for it in range(1, cfg.ppo_iterations + 1):
        # rollouts
        prompts = reviews.prompts(cfg.ppo_batch, data).to(device)
        seqs = sample(policy, prompts, data)
        meter.forward("ppo", int(seqs.numel()))
        mask = reviews.completion_mask(seqs[:, P:])
        with torch.no_grad():
            old_logp = sequence_logprobs(policy, seqs, per_token=True)
            ref_logp = sequence_logprobs(agent.reference, seqs, per_token=True)
            score = rm.score(seqs, mask)
            values = value(seqs[:, :-1])[:, P - 1:] * mask
        meter.forward("ppo", 4 * tokens_of(seqs))
        rewards = kl_shaped_rewards(old_logp, ref_logp, score, mask, kl_coef)
        last = (mask.sum(1).long() - 1).clamp(min=0)
        dones = torch.zeros_like(rewards).scatter_(1, last[:, None], 1.0)
        adv = gae(rewards.T, values.T, dones.T, torch.zeros(seqs.size(0), device=device), cfg.gamma, cfg.gae_lambda).T
        returns = adv + values
        valid = mask.bool()
        adv = (adv - adv[valid].mean()) / (adv[valid].std() + 1e-8)
        # optimisation
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(seqs.size(0), generator=data).to(device)
            for start in range(0, seqs.size(0), cfg.ppo_minibatch):
                idx = order[start:start + cfg.ppo_minibatch]
                v = valid[idx]
                logp = sequence_logprobs(policy, seqs[idx], per_token=True)
                ratio = probability_ratio(logp[v], old_logp[idx][v])
                loss = -clipped_surrogate(ratio, adv[idx][v], cfg.clip_ratio)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                vf_loss = F.mse_loss(value(seqs[idx][:, :-1])[:, P - 1:][v], returns[idx][v])
                vf_opt.zero_grad(set_to_none=True)
                vf_loss.backward()
                vf_opt.step()
                meter.train("ppo", 2 * tokens_of(seqs[idx]))
        if it % cfg.log_every == 0:
            with torch.no_grad():
                kl = ((old_logp - ref_logp) * mask).sum(1).mean().item()
                true = sum(reviews.reward(r) for r in seqs.tolist()) / seqs.size(0)
            run.log(offset + it, **{f"ppo_score_kl{kl_coef:g}": score.mean().item(),
                                    f"ppo_true_reward_kl{kl_coef:g}": true, f"ppo_kl_kl{kl_coef:g}": kl})
        if it in saves:
            agent.points[saves[it]].load_state_dict(policy.state_dict())
    return offset + cfg.ppo_iterations


@torch.no_grad()
def measure_point(gpt: GPT, reference: GPT, prompts: torch.Tensor, generator: torch.Generator) -> tuple[float, float]:
    """(mean KL to the reference, mean true reward) of one completion per prompt at temperature 1,
    the KL by `reviews.sequence_kl` (what the evaluator does, on its own prompts and stream)."""
    seqs = sample(gpt, prompts, generator)
    gpt.eval()
    logp = torch.log_softmax(gpt(seqs[:, :-1])[0][:, P - 1:].float(), dim=-1)
    ref = torch.log_softmax(reference(seqs[:, :-1])[0][:, P - 1:].float(), dim=-1)
    kl = reviews.sequence_kl(logp, ref, reviews.completion_mask(seqs[:, P:]))
    return kl.mean().item(), sum(reviews.reward(r) for r in seqs.tolist()) / seqs.size(0)


def plot_frontier(agent: FrontierAgent, cfg: Config, run: RunContext) -> None:
    """The run's own reward-KL plane (Figure 2 left) as an image beside its record: every checkpoint
    measured on `plot_prompts` held-out prompts, each method's frontier drawn as a step line. The
    record's numbers are the evaluator's, on its own prompts; this picture is for reading them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prompts = reviews.prompts(cfg.plot_prompts, torch.Generator().manual_seed(4242)).to(run.device)
    ref_reward = measure_point(agent.reference, agent.reference, prompts, torch.Generator().manual_seed(1))[1]
    points = {m: [] for m in ("dpo", "ppo")}
    for name in agent.frontier_points():
        points[agent.point_method(name)].append(
            (*measure_point(agent.points[name], agent.reference, prompts, torch.Generator().manual_seed(1)), name))
    kl_max = min(max(kl for kl, _, _ in pts) for pts in points.values())
    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=110)
    for (method, pts), color in zip(points.items(), ("tab:blue", "tab:orange")):
        ax.scatter([kl for kl, _, _ in pts], [r for _, r, _ in pts], color=color, s=18,
                   label=f"{method.upper()} checkpoints")
        grid = sorted({0.0, kl_max, *(kl for kl, _, _ in pts if kl <= kl_max)})
        front = reviews.frontier([(0.0, ref_reward)] + [(kl, r) for kl, r, _ in pts], grid)
        area = reviews.frontier_area([(kl, r) for kl, r, _ in pts], ref_reward, kl_max)
        ax.step(grid, front, where="post", color=color, label=f"{method.upper()} frontier (area {area:.3f})")
    ax.scatter([0.0], [ref_reward], color="black", marker="x", label="SFT reference")
    ax.axvline(kl_max, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("KL(pi || pi_ref), nats per completion")
    ax.set_ylabel("mean true reward")
    ax.set_title(f"Reward vs KL, seed {run.seed} (in-run measurement, {cfg.plot_prompts} prompts)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(run.dir) / "reward_kl_frontier.png")
    plt.close(fig)


def train(cfg: Config, run: RunContext) -> FrontierAgent:
    agent = build(cfg).to(run.device)
    data = torch.Generator().manual_seed(run.seed)
    # ALGO LOGIC: pi_SFT, the pairs, then each method from them
    sft_gpt = GPT(gpt_config(cfg)).to(run.device)
    run.progress(2 + len(cfg.dpo_betas) + 1 + len(cfg.ppo_kl_coefs), unit="phase")
    sft(sft_gpt, cfg, data, run)
    agent.reference.load_state_dict(sft_gpt.state_dict())
    run.advance()
    chosen, rejected = preference_pairs(agent.reference, cfg, data, run.device)
    run.log(cfg.sft_steps, pairs=float(chosen.size(0)))
    run.advance()
    meter = Meter(agent.reference.num_parameters())
    names = [n for n, _ in point_names(cfg)]
    k = cfg.checkpoints
    step = cfg.sft_steps
    for i, beta in enumerate(cfg.dpo_betas):
        t0 = time.process_time()
        step = dpo(agent, cfg, beta, chosen, rejected, data, meter, run, names[i * k:(i + 1) * k], step)
        meter.seconds["dpo"] += time.process_time() - t0
        run.advance()
    t0 = time.process_time()
    rm, step = reward_model(agent, cfg, chosen, rejected, data, meter, run, step)
    meter.seconds["ppo"] += time.process_time() - t0
    run.advance()
    base = len(cfg.dpo_betas) * k
    for i, kl_coef in enumerate(cfg.ppo_kl_coefs):
        t0 = time.process_time()
        step = ppo(agent, rm, cfg, kl_coef, data, meter, run, names[base + i * k:base + (i + 1) * k], step)
        meter.seconds["ppo"] += time.process_time() - t0
        run.advance()
    # TRY NOT TO MODIFY: what each method cost
    agent.compute.copy_(torch.tensor([meter.flops["dpo"], meter.flops["ppo"], meter.seconds["dpo"],
                                      meter.seconds["ppo"]], dtype=torch.float64))
    run.log(step, dpo_gflops=meter.flops["dpo"] / 1e9, ppo_gflops=meter.flops["ppo"] / 1e9,
            dpo_cpu_seconds=meter.seconds["dpo"], ppo_cpu_seconds=meter.seconds["ppo"])
    if cfg.plot_prompts:
        plot_frontier(agent, cfg, run)
    agent.eval()
    return agent


def dry_run_step(agent: FrontierAgent, cfg: Config) -> dict[str, float]:
    """One DPO step on two pairs sampled from the (untrained) reference."""
    device = next(agent.parameters()).device
    g = torch.Generator().manual_seed(0)
    prompts = reviews.prompts(2, g).to(device)
    chosen, rejected = sample(agent.reference, prompts, g), sample(agent.reference, prompts, g)
    policy = copy.deepcopy(agent.reference).requires_grad_(True)
    with torch.no_grad():
        ref_c, ref_r = sequence_logprobs(agent.reference, chosen), sequence_logprobs(agent.reference, rejected)
    loss = dpo_loss(sequence_logprobs(policy, chosen), sequence_logprobs(policy, rejected), ref_c, ref_r,
                    cfg.dpo_betas[0])
    loss.backward()
    return {"dpo_loss": loss.item()}


def data_fingerprint(cfg: Config) -> str:
    return ("review language generated by evals/tasks/reviews.py (sentiment-scored, 2-4 sentences), fresh reviews "
            f"from the run's seed; {cfg.pair_prompts} preference prompts sampled twice from the SFT model")
