"""The surrogate objectives that the paper's Table 1 (section 6.1) compares with clipping, as the
`no_clip` and `adaptive_kl` arms of the mini tier. Everything else (the actor-critic, GAE, the
value loss, Algorithm 1's rollout-then-optimise loop) is `ppo.py`'s, unchanged:

- (6)  no clipping or penalty:  L^CPI(theta) = E_t[ r_t(theta) A_t ];
- (8)  KL penalty:  L^KLPEN(theta) = E_t[ r_t(theta) A_t - beta KL[pi_old(.|s_t), pi_theta(.|s_t)] ],
       with the adaptive coefficient of section 4: after each policy update compute
       d = E_t[ KL[pi_old(.|s_t), pi_theta(.|s_t)] ]; if d < d_targ / 1.5 then beta <- beta / 2,
       if d > d_targ * 1.5 then beta <- beta * 2 (the initial beta is 1 in section 6.1).

The clipped objective (7) is `ppo.py`'s `Learner`; each alternative here is a `Learner` whose
minibatch loss replaces L^CLIP in eq. (9) (value loss and entropy bonus as there). `ppo.train`
builds its learner from the module attribute `ppo.Learner` and has no parameter for it; `train`
below binds that attribute to the chosen learner for the length of the run (the module's file
is unchanged, so the records of the papers that import it stay valid).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from torch.distributions import Categorical, Normal, kl_divergence

from reproductions.ppo import ppo
from reproductions.ppo.ppo import build, data_fingerprint, probability_ratio, required_data  # noqa: F401  (the contract's hooks)


@dataclass
class Config(ppo.Config):
    objective: Literal["no_clip", "adaptive_kl"] = "no_clip"
    kl_target: Annotated[float, Field(gt=0)] = 0.01   # d_targ of section 4
    kl_beta: Annotated[float, Field(gt=0)] = 1.0      # the initial beta


def unclipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Eq. (6), L^CPI: the mean of r_t A_t, nothing keeping r_t near 1."""
    return (ratio * advantages).mean()


def kl_penalty_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, kl: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. (8), L^KLPEN: the mean of r_t A_t - beta KL_t, KL_t = KL[pi_old(.|s_t), pi_theta(.|s_t)]."""
    return (ratio * advantages - beta * kl).mean()


def adapt_beta(beta: float, kl: float, kl_target: float) -> float:
    """Section 4's rule after a policy update with mean KL d: halve beta below d_targ / 1.5,
    double it above d_targ * 1.5, keep it in between."""
    if kl < kl_target / 1.5:
        return beta / 2
    if kl > kl_target * 1.5:
        return beta * 2
    return beta


def old_policy(agent: ppo.ActorCritic, obs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The parameters of pi_old(.|s) at `obs` (a Gaussian's mean and std, or the logits)."""
    with torch.no_grad():
        dist, _ = agent(obs)
    if agent.continuous:
        return {"old_loc": dist.loc, "old_scale": dist.scale}
    return {"old_logits": dist.logits}


def kl_old_new(agent: ppo.ActorCritic, mb: dict[str, torch.Tensor], dist) -> torch.Tensor:
    """KL[pi_old(.|s_t), pi_theta(.|s_t)] per sample (summed over a Gaussian's action dimensions)."""
    if agent.continuous:
        return kl_divergence(Normal(mb["old_loc"], mb["old_scale"]), dist).sum(-1)
    return kl_divergence(Categorical(logits=mb["old_logits"]), dist)


class _SurrogateLearner(ppo.Learner):
    """`ppo.Learner` with L^CLIP in eq. (9) replaced by `surrogate` (advantages normalised per
    minibatch, value loss and entropy bonus exactly as there)."""

    def surrogate(self, ratio, adv, mb, dist) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def minibatch_loss(self, mb: dict[str, torch.Tensor], clip_ratio: float) -> tuple[torch.Tensor, dict]:
        agent, cfg = self.agent, self.cfg
        dist, value = agent(mb["obs"])
        ratio = probability_ratio(agent.log_prob(dist, mb["actions"]), mb["logp"])
        adv = mb["advantages"]
        if cfg.normalize_advantage and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        l_pi, extra = self.surrogate(ratio, adv, mb, dist)
        l_vf = (value - mb["returns"]).pow(2).mean()
        entropy = agent.entropy(dist).mean()
        loss = -(l_pi - cfg.vf_coef * l_vf + cfg.ent_coef * entropy)  # eq. (9) with L^CLIP replaced
        stats = {"policy_loss": -l_pi.detach(), "value_loss": l_vf.detach(), "entropy": entropy.detach(),
                 "clip_fraction": ((ratio - 1.0).abs() > clip_ratio).float().mean().detach(), **extra}
        return loss, stats


class NoClipLearner(_SurrogateLearner):
    """Table 1's 'No clipping or penalty': eq. (6) as the policy objective."""

    def surrogate(self, ratio, adv, mb, dist):
        return unclipped_surrogate(ratio, adv), {}


class AdaptiveKLLearner(_SurrogateLearner):
    """Table 1's 'Adaptive KL d_targ': eq. (8), beta adapted after each update (section 4)."""

    def __init__(self, agent: ppo.ActorCritic, cfg: Config):
        super().__init__(agent, cfg)
        self.beta = cfg.kl_beta

    def surrogate(self, ratio, adv, mb, dist):
        kl = kl_old_new(self.agent, mb, dist)
        return kl_penalty_surrogate(ratio, adv, kl, self.beta), {"kl_minibatch": kl.mean().detach()}

    def update(self, batch: dict[str, torch.Tensor], alpha: float, generator: torch.Generator) -> dict[str, float]:
        # Before the first step the agent is pi_old, the policy that collected the batch.
        batch = {**batch, **old_policy(self.agent, batch["obs"])}
        stats = super().update(batch, alpha, generator)
        with torch.no_grad():
            dist, _ = self.agent(batch["obs"])
            d = kl_old_new(self.agent, batch, dist).mean().item()
        stats["kl"], stats["beta"] = d, self.beta   # beta used in this update
        self.beta = adapt_beta(self.beta, d, self.cfg.kl_target)
        return stats


LEARNERS = {"no_clip": NoClipLearner, "adaptive_kl": AdaptiveKLLearner}


@contextlib.contextmanager
def using_learner(cls: type):
    """`ppo.Learner` bound to `cls` inside the block (ppo.train and ppo.dry_run_step read it)."""
    saved = ppo.Learner
    ppo.Learner = cls
    try:
        yield
    finally:
        ppo.Learner = saved


def train(cfg: Config, run) -> ppo.ActorCritic:
    with using_learner(LEARNERS[cfg.objective]):
        return ppo.train(cfg, run)


def dry_run_step(agent: ppo.ActorCritic, cfg: Config) -> dict[str, float]:
    """One minibatch step of the arm's objective on a tiny random batch (`--dry-run`)."""
    env = ppo.make_agent_env(cfg.env_id, training=False)
    try:
        samples = [(env.observation_space.sample(), env.action_space.sample()) for _ in range(8)]
    finally:
        env.close()
    obs = torch.as_tensor(np.stack([o for o, _ in samples]))
    actions = torch.as_tensor(np.stack([a for _, a in samples]))
    with torch.no_grad():
        logp = agent.log_prob(agent(obs)[0], actions)
    batch = {"obs": obs, "actions": actions, "logp": logp, "advantages": torch.randn(8), "returns": torch.randn(8)}
    small = dataclasses.replace(cfg, epochs=1, minibatch_size=8)
    return LEARNERS[cfg.objective](agent, small).update(batch, 1.0, torch.Generator().manual_seed(0))
