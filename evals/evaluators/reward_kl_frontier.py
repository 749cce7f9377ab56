"""The reward-KL frontier of DPO (arXiv 2305.18290, Section 6.1, Figure 2 left): every checkpoint
of every method is a point (KL(pi || pi_ref), mean ground-truth reward) on held-out prompts, and
each method's frontier is the best reward it reaches within a KL budget.

Protocol: `n` prompts of the review language (`evals.tasks.reviews`, the first sentence of a fresh
review) drawn from a generator seeded with `heldout_seed` (never the run's); for the reference
model and for each checkpoint the agent names (`PolicyFamily`), one completion per prompt sampled
at temperature 1 (the paper's sampling for this plot), every model with the same sampling stream
(`sample_seed`). Per completion:
- `reward`: the task's ground-truth reward of the whole review (prompt and completion);
- `kl`: `reviews.sequence_kl`, the sum over the completion's positions of the exact KL between
  the policy's and the reference's next-token distributions (an unbiased, low-variance estimate
  of the sequence-level KL(pi || pi_ref) at that prompt);
- `point`: the index of the model in `protocol.points` (-1: the reference).
A point is the mean reward and mean KL of its completions. With `methods: [a, b]`:
- `frontier_area_<m>`: `reviews.frontier_area` of each method's points, the reference at KL 0,
  the reward normalised from the reference's mean reward to the reward's supremum, over KL
  budgets 0..kl_max; kl_max is the option, or else the smaller of the two methods' largest KL
  (the range both cover);
- `area_gap` = area(a) - area(b); `ahead_share`: the share of budgets in 0..kl_max where a's
  frontier is at least b's; `dominates`: 1 if that share is 1;
- `compute_ratio` = a's counted training FLOPs / b's, and `cpu_time_ratio` the same for their
  measured CPU seconds (both from the agent's `training_compute()`, kept in the protocol);
- `reference_reward`, `kl_max`, `best_reward_<m>` (the highest point of m within kl_max).
`derive` recomputes every metric from the samples and the protocol.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import PolicyFamily, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks import reviews


class RewardKLFrontierOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(512, ge=1)                      # held-out prompts, one completion each per model
    methods: list[str] = Field(default_factory=lambda: ["dpo", "ppo"], min_length=2, max_length=2)
    kl_max: float | None = Field(None, gt=0)       # None: the smaller of the methods' largest KL
    heldout_seed: int = 20230529
    sample_seed: int = 0
    batch_size: int = Field(512, ge=1)


def tiny(options: RewardKLFrontierOptions) -> RewardKLFrontierOptions:
    return shrunk(options, n=4)


def _names(o: RewardKLFrontierOptions) -> list[str]:
    return [*(f"frontier_area_{m}" for m in o.methods), *(f"best_reward_{m}" for m in o.methods), "area_gap",
            "ahead_share", "dominates", "compute_ratio", "cpu_time_ratio", "reference_reward", "kl_max"]


@torch.no_grad()
def sample_and_score(family: PolicyFamily, name: str, prompts: torch.Tensor, generator: torch.Generator,
                     batch_size: int) -> tuple[list[float], list[float]]:
    """One completion per prompt from checkpoint `name` at temperature 1: its reward and its KL
    to the reference (`reviews.sequence_kl`)."""
    rewards, kls = [], []
    for start in range(0, prompts.size(0), batch_size):
        seqs = prompts[start:start + batch_size]
        steps = []
        for _ in range(reviews.MAX_COMPLETION):
            logp = family.log_probs(name, seqs)[:, -1].float()
            steps.append(logp)
            nxt = torch.multinomial(logp.exp().cpu(), 1, generator=generator).to(seqs.device)
            seqs = torch.cat([seqs, nxt], dim=1)
        logp = torch.stack(steps, dim=1)                                        # (n, T, vocab)
        ref = family.log_probs("reference", seqs[:, :-1])[:, reviews.PROMPT_LEN - 1:].float()
        completions = seqs[:, reviews.PROMPT_LEN:]
        kls += reviews.sequence_kl(logp, ref, reviews.completion_mask(completions)).tolist()
        rewards += [reviews.reward(row) for row in seqs.tolist()]
    return rewards, kls


def _metrics(points: dict[int, tuple[float, float]], names: list[str], methods_of: list[str], methods: list[str],
             compute: dict[str, float], kl_max_option: float | None) -> dict[str, float]:
    """The summary metrics from each point's (mean KL, mean reward); index -1 is the reference."""
    ref_reward = points[-1][1]
    per_method = {m: [points[i] for i in range(len(names)) if methods_of[i] == m] for m in methods}
    for m, pts in per_method.items():
        if not pts:
            raise ValueError(f"reward_kl_frontier: the agent has no checkpoint of method {m!r}")
    # the range both methods cover: the smaller of their largest KL (at least a hair above 0)
    kl_max = kl_max_option or max(min(max(kl for kl, _ in pts) for pts in per_method.values()), 1e-6)
    a, b = methods
    out = {f"frontier_area_{m}": reviews.frontier_area(pts, ref_reward, kl_max) for m, pts in per_method.items()}
    out |= {f"best_reward_{m}": max([r for kl, r in pts if kl <= kl_max], default=ref_reward)
            for m, pts in per_method.items()}
    ahead = reviews.share_ahead(per_method[a], per_method[b], ref_reward, kl_max)
    out |= {"area_gap": out[f"frontier_area_{a}"] - out[f"frontier_area_{b}"], "ahead_share": ahead,
            "dominates": float(ahead >= 1.0), "reference_reward": ref_reward, "kl_max": kl_max,
            "compute_ratio": compute[f"{a}_flops"] / compute[f"{b}_flops"],
            "cpu_time_ratio": compute[f"{a}_cpu_seconds"] / compute[f"{b}_cpu_seconds"]}
    return out


def _points(samples: dict[str, list[float]]) -> dict[int, tuple[float, float]]:
    index = np.asarray(samples["point"], dtype=int)
    reward, kl = np.asarray(samples["reward"]), np.asarray(samples["kl"])
    return {int(i): (float(kl[index == i].mean()), float(reward[index == i].mean())) for i in np.unique(index)}


def derive(result: EvalResult) -> dict[str, float]:
    p = result.protocol
    return _metrics(_points(result.samples), p["points"], p["point_methods"], p["methods"], p["training_compute"],
                    p.get("kl_max_option"))


@register("reward_kl_frontier", version=1, options=RewardKLFrontierOptions, metric_names=_names, derive=derive,
          tiny=tiny)
def reward_kl_frontier(agent, config, options: RewardKLFrontierOptions) -> Measured:
    family = capability(agent, PolicyFamily, "reward_kl_frontier")
    device = next(agent.parameters()).device if hasattr(agent, "parameters") else torch.device("cpu")
    prompts = reviews.prompts(options.n, torch.Generator().manual_seed(options.heldout_seed)).to(device)
    names = list(family.frontier_points())
    methods_of = [family.point_method(n) for n in names]
    samples: dict[str, list[float]] = {"point": [], "reward": [], "kl": []}
    for i, name in enumerate(["reference", *names], start=-1):
        rewards, kls = sample_and_score(family, name, prompts, torch.Generator().manual_seed(options.sample_seed),
                                        options.batch_size)
        samples["point"] += [float(i)] * len(rewards)
        samples["reward"] += rewards
        samples["kl"] += kls
    compute = {k: float(v) for k, v in family.training_compute().items()}
    metrics = _metrics(_points(samples), names, methods_of, options.methods, compute, options.kl_max)
    protocol = {
        "points": names, "point_methods": methods_of, "methods": options.methods, "training_compute": compute,
        "kl_max_option": options.kl_max, "prompts": f"{options.n} review prompts, heldout_seed {options.heldout_seed}",
        "sampling": f"one completion per prompt per model at temperature 1, up to {reviews.MAX_COMPLETION} tokens, "
                    f"sample_seed {options.sample_seed} for every model",
        "reward": "ground truth: sigmoid of the review's sentiment score (evals/tasks/reviews.py), whole review",
        "kl": "sum over the completion's positions of KL(pi(.|prefix) || pi_ref(.|prefix)), exact per position",
        "frontier": "best mean reward of a method's checkpoints within each KL budget; area normalised by kl_max "
                    "and by the reward's range from the reference's mean reward to its supremum 1",
    }
    return Measured(metrics=metrics, samples=samples, protocol=protocol)
