"""Soft Actor-Critic (Haarnoja et al., "Soft Actor-Critic Algorithms and Applications",
arXiv 1812.05905), read top to bottom: networks, the three losses, the update, the training loop.

Equation numbers are the paper's:
- (5)-(6)  soft Q loss against the soft target  r + gamma * (min_i Q_targ_i(s', a') - alpha log pi(a'|s'))
           with twin Q functions and the min of the two (Section 5, after Fujimoto et al.);
- (7), (9) policy loss  E[ alpha log pi(f(eps; s) | s) - Q(s, f(eps; s)) ], reparameterised;
- (18)     temperature loss  E[ -alpha log pi(a|s) - alpha * H_target ],  H_target = -|A|;
- (21)     the tanh-squashed Gaussian's log-likelihood (Appendix C):
           log pi(a|s) = log mu(u|s) - sum_i log(1 - tanh(u_i)^2);
- targets are Polyak averages  theta_targ <- tau * theta + (1 - tau) * theta_targ  (Algorithm 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.contract import SafetensorsModule
from evals.tasks.atari import env_data_fingerprint as data_fingerprint  # noqa: F401  (the contract's data hooks:
from evals.tasks.atari import env_required_data as required_data  # noqa: F401  the env the config names)
from evals.tasks.envs import box_bounds, episode_seed, make_env
from reproductions.common.replay import ReplayBuffer
from reproductions.common.training import restore, snapshot

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the clamp of the authors' implementation


@dataclass
class Config:
    """Hyper-parameters; the defaults are the paper's Table 1 (Appendix D)."""

    env_id: str = "Pendulum-v1"
    total_steps: int = 20_000
    learning_starts: int = 1_000        # uniform random actions before the first update
    buffer_size: int = 1_000_000
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4                    # actor, critics and temperature alike
    hidden: int = 256                   # two hidden layers of this width in every network
    gradient_steps: int = 1
    target_entropy: float | None = None  # None: -|A|, the paper's heuristic
    init_alpha: float = 1.0
    log_every: int = 500


def mlp(n_in: int, n_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def squashed_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Eq. (21): the Gaussian log-density of u minus the log-Jacobian of tanh, summed over actions.
    log(1 - tanh(u)^2) is computed as 2 * (log 2 - u - softplus(-2u)), which is exact and stable."""
    gaussian = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_det = (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
    return gaussian - log_det


class Actor(nn.Module):
    """pi(a|s): a Gaussian over u, squashed by tanh into [-1, 1]^|A|."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a = tanh(mean + std * eps) with eps ~ N(0, I) (the reparameterisation of eq. (9))."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u), squashed_log_prob(u, mean, log_std)


class TwinQ(nn.Module):
    """Q_1, Q_2 (s, a): two independent critics."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, 1, hidden)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def soft_q_target(reward, terminated, next_q1, next_q2, next_log_prob, alpha: float, gamma: float) -> torch.Tensor:
    """Eq. (5)-(6) with twin critics: y = r + gamma * (1 - d) * (min(Q1', Q2') - alpha * log pi(a'|s'))."""
    return reward + gamma * (1.0 - terminated) * (torch.min(next_q1, next_q2) - alpha * next_log_prob)


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Eq. (18), optimised through log(alpha) (so alpha stays positive), as the authors' code does."""
    return -(log_alpha * (log_prob + target_entropy).detach()).mean()


def polyak(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, tau)


class SAC(SafetensorsModule):
    """The trained thing: actor, twin critics and their targets, log(alpha). Acts in env units."""

    def __init__(self, cfg: Config, obs_dim: int, act_low: np.ndarray, act_high: np.ndarray):
        super().__init__()
        act_dim = len(act_low)
        self.actor = Actor(obs_dim, act_dim, cfg.hidden)
        self.critic = TwinQ(obs_dim, act_dim, cfg.hidden)
        self.critic_target = TwinQ(obs_dim, act_dim, cfg.hidden)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_alpha)))
        self.target_entropy = -float(act_dim) if cfg.target_entropy is None else cfg.target_entropy
        self.register_buffer("act_low", torch.as_tensor(act_low))
        self.register_buffer("act_high", torch.as_tensor(act_high))

    def to_env(self, a: np.ndarray) -> np.ndarray:
        """Map [-1, 1] to the env's action box (the bounds live on the agent's device; the env wants numpy)."""
        low, high = self.act_low.cpu().numpy(), self.act_high.cpu().numpy()
        return low + (a + 1.0) * 0.5 * (high - low)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.to_env(self.act_normalized(obs, deterministic))

    @torch.inference_mode()
    def act_normalized(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.act_low.device).unsqueeze(0)
        if deterministic:
            a = torch.tanh(self.actor(x)[0])
        else:
            a, _ = self.actor.sample(x)
        return a.squeeze(0).cpu().numpy()

    def num_parameters(self) -> int:
        return sum(p.numel() for m in (self.actor, self.critic) for p in m.parameters()) + 1


class Learner:
    """SAC's optimisers and its gradient step (Algorithm 1, the inner loop)."""

    def __init__(self, agent: SAC, cfg: Config):
        self.agent, self.cfg = agent, cfg
        self.critic_opt = torch.optim.Adam(agent.critic.parameters(), lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(agent.actor.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([agent.log_alpha], lr=cfg.lr)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        agent, cfg = self.agent, self.cfg
        alpha = agent.log_alpha.exp().detach()

        # Soft Q update, eq. (6): regress both critics onto the same soft target.
        with torch.no_grad():
            next_action, next_log_prob = agent.actor.sample(batch["next_obs"])
            next_q1, next_q2 = agent.critic_target(batch["next_obs"], next_action)
            y = soft_q_target(batch["rewards"], batch["terminated"], next_q1, next_q2, next_log_prob, alpha, cfg.gamma)
        q1, q2 = agent.critic(batch["obs"], batch["actions"])
        critic_loss = 0.5 * (F.mse_loss(q1, y) + F.mse_loss(q2, y))
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Policy update, eq. (9), against the min of the twin critics.
        action, log_prob = agent.actor.sample(batch["obs"])
        agent.critic.requires_grad_(False)
        q_pi = torch.min(*agent.critic(batch["obs"], action))
        agent.critic.requires_grad_(True)
        actor_loss = (alpha * log_prob - q_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        # Temperature update, eq. (18).
        alpha_loss = temperature_loss(agent.log_alpha, log_prob, agent.target_entropy)
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        polyak(agent.critic_target, agent.critic, cfg.tau)
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                "alpha_loss": alpha_loss.detach(), "alpha": alpha, "q": q1.detach().mean()}

    def state_dict(self) -> dict:
        return {"critic_opt": self.critic_opt.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for name in ("critic_opt", "actor_opt", "alpha_opt"):
            getattr(self, name).load_state_dict(state[name])


def env_spaces(env_id: str) -> tuple[int, np.ndarray, np.ndarray]:
    env = make_env(env_id)
    try:
        obs_dim = int(np.prod(env.observation_space.shape))
        low, high = box_bounds(env.action_space)
    finally:
        env.close()
    return obs_dim, low, high


def build(cfg: Config) -> SAC:
    obs_dim, low, high = env_spaces(cfg.env_id)
    return SAC(cfg, obs_dim, low, high)


def train(cfg: Config, run) -> SAC:
    env: gym.Env = make_env(cfg.env_id)
    agent = build(cfg).to(run.device)
    learner = Learner(agent, cfg)
    obs_dim, act_dim = int(np.prod(env.observation_space.shape)), len(agent.act_low)
    buffer = ReplayBuffer(min(cfg.buffer_size, cfg.total_steps), (obs_dim,), (act_dim,), seed=run.seed)
    explore = torch.Generator().manual_seed(run.seed)  # the uniform actions before learning starts
    parts = {"agent": agent, "learner": learner, "buffer": buffer, "explore": explore}
    step, episode = 0, 0
    resumed = run.resume_state()
    if resumed is not None:  # checkpoints are taken at episode boundaries (see episode_seed)
        counters = restore(resumed, parts)
        step, episode = counters["step"], counters["episode"]

    run.progress(cfg.total_steps)
    obs, _ = env.reset(seed=episode_seed(run.seed, episode))
    episode_return, losses = 0.0, {}
    while step < cfg.total_steps:
        if step < cfg.learning_starts:
            a = torch.rand(act_dim, generator=explore).numpy() * 2.0 - 1.0
        else:
            a = agent.act_normalized(obs, deterministic=False)
        next_obs, reward, terminated, truncated, _ = env.step(agent.to_env(a))
        buffer.add(obs, a, reward, next_obs, terminated)
        obs, episode_return, step = next_obs, episode_return + float(reward), step + 1

        if step > cfg.learning_starts:
            for _ in range(cfg.gradient_steps):
                losses = learner.update(buffer.sample(cfg.batch_size, run.device))
            if step % cfg.log_every == 0:
                run.log(step, **{k: v.item() for k, v in losses.items()})

        if terminated or truncated:
            run.log(step, train_return=episode_return)
            episode, episode_return = episode + 1, 0.0
            obs, _ = env.reset(seed=episode_seed(run.seed, episode))
            run.maybe_checkpoint(step, lambda: snapshot(parts, step=step, episode=episode))
        run.advance()
    env.close()
    return agent


def dry_run_step(agent: SAC, cfg: Config) -> dict[str, float]:
    """One gradient step on a tiny random batch (for `--dry-run` of tiers that cannot run here)."""
    obs_dim, act_dim = agent.actor.net[0].in_features, len(agent.act_low)
    n = 8
    batch = {"obs": torch.randn(n, obs_dim), "actions": torch.rand(n, act_dim) * 2 - 1, "rewards": torch.randn(n),
             "next_obs": torch.randn(n, obs_dim), "terminated": torch.zeros(n)}
    return {k: v.item() for k, v in Learner(agent, cfg).update(batch).items()}
