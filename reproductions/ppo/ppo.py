"""Proximal Policy Optimization (Schulman et al., arXiv 1707.06347), read top to bottom: the
actor-critic, the clipped objective, GAE, the rollout-then-optimise loop (Algorithm 1).

The paper's equations:
- (6)   r_t(theta) = pi_theta(a_t|s_t) / pi_theta_old(a_t|s_t), the probability ratio;
- (7)   L^CLIP(theta) = E_t[ min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) ];
- (9)   L^{CLIP+VF+S}(theta) = E_t[ L^CLIP_t - c1 L^VF_t + c2 S[pi_theta](s_t) ],
        L^VF_t = (V_theta(s_t) - V_t^targ)^2, S the policy's entropy;
- (11)-(12) truncated GAE:  delta_t = r_t + gamma V(s_{t+1}) - V(s_t),
        A_t = delta_t + (gamma lambda) delta_{t+1} + ... over the horizon T;
- Algorithm 1: N parallel actors each run T steps, then K epochs of minibatch Adam on the N*T samples.
Atari (Table 5) anneals alpha from 1 to 0 over training, scaling the step size and eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical, Normal

from evals.contract import SafetensorsModule
from evals.tasks.atari import make_agent_env
from evals.tasks.atari import env_data_fingerprint as data_fingerprint  # noqa: F401  (the contract's data hooks:
from evals.tasks.atari import env_required_data as required_data  # noqa: F401  the env the config names)
from reproductions.common.conv_torso import ConvTorso


@dataclass
class Config:
    """Hyper-parameters; the defaults are the paper's MuJoCo setting (Table 3)."""

    env_id: str = "HalfCheetah-v5"
    total_steps: int = 1_000_000
    num_envs: int = 1                   # N, parallel actors
    num_steps: int = 2048               # T, horizon per actor and update
    epochs: int = 10                    # K
    minibatch_size: int = 64
    lr: float = 3e-4                    # Adam step size
    anneal: bool = False                # alpha: 1 -> 0 over training, scaling lr and clip_ratio (Atari)
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_ratio: float = 0.2             # eps of eq. (7)
    vf_coef: float = 0.5                # c1 of eq. (9)
    ent_coef: float = 0.0               # c2 of eq. (9)
    max_grad_norm: float | None = None  # global gradient-norm clipping; none in the paper
    normalize_advantage: bool = True    # per minibatch, as the authors' code
    hidden: int = 64                    # two tanh hidden layers in the policy and in the value network


def probability_ratio(logp_new: torch.Tensor, logp_old: torch.Tensor) -> torch.Tensor:
    """Eq. (6), computed in log space."""
    return torch.exp(logp_new - logp_old)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_ratio: float) -> torch.Tensor:
    """Eq. (7): the pessimistic minimum of the unclipped and the clipped objective, averaged."""
    return torch.min(ratio * advantages, ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio) * advantages).mean()


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
        gamma: float, lam: float) -> torch.Tensor:
    """Eq. (11)-(12) over a (T, N) rollout. dones[t] = 1 where the episode ended at step t, so no
    value and no later advantage flows back across it; last_value = V(s_T) bootstraps the horizon."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(rewards.shape[0])):
        next_value = last_value if t == rewards.shape[0] - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * nonterminal * next_value - values[t]
        running = delta + gamma * lam * nonterminal * running
        advantages[t] = running
    return advantages


def mlp(n_in: int, n_out: int, hidden: int, out_gain: float) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, n_out))
    return orthogonal_init(net, out_gain)


def orthogonal_init(net: nn.Module, out_gain: float) -> nn.Module:
    """Orthogonal weights (gain sqrt 2, the output layer `out_gain`) and zero biases, as the authors' code."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for i, m in enumerate(layers):
        nn.init.orthogonal_(m.weight, out_gain if i == len(layers) - 1 else math.sqrt(2))
        nn.init.zeros_(m.bias)
    return net


class ActorCritic(SafetensorsModule):
    """pi(a|s) and V(s). Vectors: separate MLPs for policy and value (the paper's MuJoCo networks),
    a Gaussian with state-independent log std for continuous actions. Images: the shared convolutional
    torso with a policy head and a value head (the paper's Atari network, trained with c1, c2)."""

    def __init__(self, cfg: Config, obs_space: gym.spaces.Box, action_space: gym.Space):
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        n_out = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        self.image = len(obs_space.shape) == 3
        if self.image:
            self.torso = orthogonal_init(ConvTorso(obs_space.shape[0]), math.sqrt(2))
            self.pi_head = orthogonal_init(nn.Linear(ConvTorso.out_features, n_out), 0.01)
            self.v_head = orthogonal_init(nn.Linear(ConvTorso.out_features, 1), 1.0)
        else:
            obs_dim = int(np.prod(obs_space.shape))
            self.pi_net = mlp(obs_dim, n_out, cfg.hidden, 0.01)
            self.v_net = mlp(obs_dim, 1, cfg.hidden, 1.0)
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(n_out))
            self.register_buffer("act_low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("act_high", torch.as_tensor(action_space.high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor):
        """The action distribution and V(s)."""
        if self.image:
            h = self.torso(obs)
            out, value = self.pi_head(h), self.v_head(h)
        else:
            obs = obs.float()
            out, value = self.pi_net(obs), self.v_net(obs)
        dist = Normal(out, self.log_std.exp().expand_as(out)) if self.continuous else Categorical(logits=out)
        return dist, value.squeeze(-1)

    def log_prob(self, dist, actions: torch.Tensor) -> torch.Tensor:
        return dist.log_prob(actions).sum(-1) if self.continuous else dist.log_prob(actions)

    def entropy(self, dist) -> torch.Tensor:
        return dist.entropy().sum(-1) if self.continuous else dist.entropy()

    def to_env(self, actions: torch.Tensor) -> np.ndarray:
        """Continuous actions are clipped into the env's box when stepping (the log-probability is of
        the unclipped sample)."""
        if self.continuous:
            actions = torch.max(torch.min(actions, self.act_high), self.act_low)
        return actions.cpu().numpy()

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = True):
        x = torch.as_tensor(np.asarray(obs), device=self.device).unsqueeze(0)
        dist, _ = self(x)
        if deterministic:
            a = dist.mean if self.continuous else dist.probs.argmax(-1)
        else:
            a = dist.sample()
        a = self.to_env(a)[0]
        return a if self.continuous else int(a)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class Learner:
    """K epochs of minibatch Adam on eq. (9) over one rollout (Algorithm 1, the inner loop)."""

    def __init__(self, agent: ActorCritic, cfg: Config):
        self.agent, self.cfg = agent, cfg
        self.opt = torch.optim.Adam(agent.parameters(), lr=cfg.lr, eps=1e-5)

    def minibatch_loss(self, mb: dict[str, torch.Tensor], clip_ratio: float) -> tuple[torch.Tensor, dict]:
        agent, cfg = self.agent, self.cfg
        dist, value = agent(mb["obs"])
        ratio = probability_ratio(agent.log_prob(dist, mb["actions"]), mb["logp"])
        adv = mb["advantages"]
        if cfg.normalize_advantage and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        l_clip = clipped_surrogate(ratio, adv, clip_ratio)
        l_vf = (value - mb["returns"]).pow(2).mean()
        entropy = agent.entropy(dist).mean()
        loss = -(l_clip - cfg.vf_coef * l_vf + cfg.ent_coef * entropy)  # eq. (9), maximised
        stats = {"policy_loss": -l_clip.detach(), "value_loss": l_vf.detach(), "entropy": entropy.detach(),
                 "clip_fraction": ((ratio - 1.0).abs() > clip_ratio).float().mean().detach()}
        return loss, stats

    def update(self, batch: dict[str, torch.Tensor], alpha: float, generator: torch.Generator) -> dict[str, float]:
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * alpha
        clip_ratio = cfg.clip_ratio * alpha
        n = batch["obs"].shape[0]
        totals: dict[str, float] = {}
        count = 0
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=generator)
            for start in range(0, n, cfg.minibatch_size):
                idx = perm[start:start + cfg.minibatch_size].to(batch["obs"].device)
                loss, stats = self.minibatch_loss({k: v[idx] for k, v in batch.items()}, clip_ratio)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
                self.opt.step()
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + v.item()
                count += 1
        return {k: v / count for k, v in totals.items()}


def make_vector_env(cfg: Config) -> gym.vector.SyncVectorEnv:
    """N actors in one process; an ended episode is reset in the same step (its last observation in
    info["final_obs"]), so every step of the rollout is a real transition."""
    return gym.vector.SyncVectorEnv([partial(make_agent_env, cfg.env_id, True) for _ in range(cfg.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def build(cfg: Config) -> ActorCritic:
    env = make_agent_env(cfg.env_id, training=False)
    try:
        return ActorCritic(cfg, env.observation_space, env.action_space)
    finally:
        env.close()


def _ended_games(info: dict, done: np.ndarray) -> np.ndarray:
    """Which ended episodes were whole games (an Atari life loss ends a training episode, not the game)."""
    game_over = info.get("final_info", {}).get("game_over")
    return done if game_over is None else done & game_over.astype(bool)


def train(cfg: Config, run) -> ActorCritic:
    """No mid-run checkpoints: the N actors' episodes straddle every update, so an exact resume would
    need the simulators' own states."""
    envs = make_vector_env(cfg)
    agent = build(cfg).to(run.device)
    learner = Learner(agent, cfg)
    shuffle = torch.Generator().manual_seed(run.seed)
    batch_size = cfg.num_envs * cfg.num_steps
    num_updates = cfg.total_steps // batch_size
    if num_updates < 1:
        raise ValueError(f"config field 'total_steps': {cfg.total_steps} is less than one rollout of "
                         f"num_envs * num_steps = {batch_size} steps")
    T, N, dev = cfg.num_steps, cfg.num_envs, run.device
    obs_space = envs.single_observation_space
    obs_buf = torch.zeros((T, N, *obs_space.shape), dtype=torch.uint8 if obs_space.dtype == np.uint8 else torch.float32, device=dev)
    act_buf = torch.zeros((T, N, *envs.single_action_space.shape), dtype=torch.float32 if agent.continuous else torch.long, device=dev)
    logp_buf, rew_buf, done_buf, val_buf = (torch.zeros((T, N), device=dev) for _ in range(4))

    run.progress(num_updates * batch_size)
    obs, _ = envs.reset(seed=run.seed)  # actor i gets seed + i
    game_returns = np.zeros(N)
    step = 0
    for update in range(num_updates):
        alpha = 1.0 - update / num_updates if cfg.anneal else 1.0
        for t in range(T):
            obs_t = torch.as_tensor(obs, device=dev)
            with torch.no_grad():
                dist, value = agent(obs_t)
                action = dist.sample()
                logp = agent.log_prob(dist, action)
            obs, reward, terminated, truncated, info = envs.step(agent.to_env(action))
            reward = reward.astype(np.float32)
            game_returns += reward
            # A time limit is not a terminal: bootstrap the cut-off episode with V(its last state).
            cut = truncated & ~terminated
            if cut.any():
                final = torch.as_tensor(np.stack(info["final_obs"][cut]), device=dev)
                with torch.no_grad():
                    reward[cut] += cfg.gamma * agent(final)[1].cpu().numpy()
            done = terminated | truncated
            obs_buf[t], act_buf[t], logp_buf[t], val_buf[t] = obs_t, action, logp, value
            rew_buf[t] = torch.as_tensor(reward, device=dev)
            done_buf[t] = torch.as_tensor(done, dtype=torch.float32, device=dev)
            step += N
            for i in np.flatnonzero(_ended_games(info, done)):
                run.log(step, train_return=float(game_returns[i]))
                game_returns[i] = 0.0
            run.advance(N)

        with torch.no_grad():
            last_value = agent(torch.as_tensor(obs, device=dev))[1]
        advantages = gae(rew_buf, val_buf, done_buf, last_value, cfg.gamma, cfg.gae_lambda)
        batch = {"obs": obs_buf.flatten(0, 1), "actions": act_buf.flatten(0, 1), "logp": logp_buf.flatten(),
                 "advantages": advantages.flatten(), "returns": (advantages + val_buf).flatten()}
        stats = learner.update(batch, alpha, shuffle)
        run.log(step, lr=cfg.lr * alpha, **stats)
    envs.close()
    return agent


def dry_run_step(agent: ActorCritic, cfg: Config) -> dict[str, float]:
    """One minibatch step of eq. (9) on a tiny random batch (for `--dry-run` of tiers that cannot run here)."""
    env = make_agent_env(cfg.env_id, training=False)
    try:
        samples = [(env.observation_space.sample(), env.action_space.sample()) for _ in range(8)]
    finally:
        env.close()
    obs = torch.as_tensor(np.stack([o for o, _ in samples]))
    actions = torch.as_tensor(np.stack([a for _, a in samples]))
    with torch.no_grad():
        dist, _ = agent(obs)
        logp = agent.log_prob(dist, actions)
    batch = {"obs": obs, "actions": actions, "logp": logp, "advantages": torch.randn(8), "returns": torch.randn(8)}
    small = Config(**{**cfg.__dict__, "epochs": 1, "minibatch_size": 8})
    return Learner(agent, small).update(batch, 1.0, torch.Generator().manual_seed(0))
