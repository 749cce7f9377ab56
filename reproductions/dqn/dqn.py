"""Deep Q-Networks (Mnih et al., "Playing Atari with Deep Reinforcement Learning", arXiv 1312.5602),
read top to bottom: the Q network, the target, the loss, epsilon-greedy, the training loop
(Algorithm 1, "deep Q-learning with experience replay").

The paper's equations:
- (2)  the Bellman target  y = r + gamma * max_a' Q(s', a'; theta_{i-1}),  and  y = r  at a terminal;
- (3)  the loss  L_i(theta_i) = E[(y_i - Q(s, a; theta_i))^2],  the target computed with the earlier
       parameters theta_{i-1} held fixed: here a target network copied from the online one every
       `target_update_interval` environment steps (1 is the paper's "previous iteration");
- Algorithm 1: experience replay (uniform minibatches from the last N transitions), epsilon-greedy
       behaviour with epsilon annealed linearly from 1 to 0.1 over the first million frames, then fixed.
`loss="huber"` clips the error term to [-1, 1] (the Huber loss with delta 1, as in DQN's later Nature
version and in Stable-Baselines3); `loss="mse"` is eq. (3) as written.

The Q network is the paper's (Section 4.1) on Atari frames, the same network scaled to MinAtar's
10x10 grid on MinAtar games (`evals/tasks/minatar.py`), and an MLP on vector observations.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.contract import SafetensorsModule
from evals.tasks import minatar
from evals.tasks.atari import env_data_fingerprint, make_agent_env
from evals.tasks.atari import env_required_data as required_data  # noqa: F401  (the contract's data hook)
from evals.tasks.envs import episode_seed
from reproductions.common.conv_torso import ConvTorso
from reproductions.common.replay import ReplayBuffer


@dataclass
class Config:
    """Hyper-parameters; the defaults are the paper's Atari setting (Section 5)."""

    env_id: str = "ALE/Pong-v5"
    total_steps: int = 10_000_000       # agent steps; the paper's "10 million frames" (see the spec's deviations)
    buffer_size: int = 1_000_000        # replay memory of the last million transitions
    batch_size: int = 32
    gamma: float = 0.99
    optimizer: str = "rmsprop"          # "rmsprop" (the paper) or "adam"
    lr: float = 2.5e-4
    rmsprop_alpha: float = 0.95         # squared-gradient decay (the paper gives no RMSProp constants)
    rmsprop_eps: float = 0.01
    loss: str = "huber"                 # "huber" (error clipping) or "mse" (eq. 3)
    max_grad_norm: float | None = None  # gradient-norm clipping; none in the paper
    learning_starts: int = 50_000       # uniform random actions (and no updates) before this step
    train_freq: int = 1                 # environment steps between rounds of updates (Algorithm 1: every step)
    gradient_steps: int = 1             # updates per round
    target_update_interval: int = 1     # steps between copies theta_{i-1} <- theta_i (1: eq. 3 as written)
    eps_start: float = 1.0
    eps_end: float = 0.1
    exploration_steps: int = 1_000_000  # linear annealing from eps_start to eps_end over these steps
    hidden: int = 256                   # width of the first hidden layer of the MLP (non-image envs)
    hidden2: int | None = None          # width of its second hidden layer (None: `hidden`)
    log_every: int = 1_000


def epsilon_at(step: int, cfg: Config) -> float:
    """Linear annealing from eps_start to eps_end over `exploration_steps`, then fixed."""
    frac = min(step / max(cfg.exploration_steps, 1), 1.0)
    return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)


def q_target(rewards, terminated, next_q_target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. (2): y = r + gamma * max_a' Q(s', a'; theta_{i-1}), and y = r where the episode terminated."""
    return rewards + gamma * (1.0 - terminated) * next_q_target.max(dim=1).values


def td_loss(q_taken: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Eq. (3), squared error, or its Huber form (the error clipped to [-1, 1] in the gradient)."""
    if kind == "mse":
        return F.mse_loss(q_taken, y)
    if kind == "huber":
        return F.smooth_l1_loss(q_taken, y)
    raise ValueError(f"config field 'loss': {kind!r} is not one of 'huber', 'mse'")


class MinAtarTorso(nn.Module):
    """The paper's network scaled to MinAtar's 10x10 grid of C object channels, as the MinAtar paper
    scales it (Young and Tian 2019, Section 5): one convolution of 16 3x3 filters with stride 1 and a
    fully connected layer of 128 units, both rectified. Takes the 0/1 grid (N, C, 10, 10)."""

    out_features = 128

    def __init__(self, in_channels: int, size: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, stride=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(16 * (size - 2) ** 2, self.out_features), nn.ReLU(),
        )

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return self.net(grid.float())


def image_torso(obs_shape: tuple[int, ...]) -> nn.Module:
    """The convolutional torso for a screen: the paper's on 84x84 Atari frames, the MinAtar-scaled
    one on a grid too small for its 8x8 stride-4 filters (MinAtar's 10x10)."""
    channels, height, width = obs_shape
    if height >= 36 and width >= 36:  # the smallest screen the paper's two convolutions fit
        return ConvTorso(channels)
    return MinAtarTorso(channels, height)


class QNetwork(nn.Module):
    """Q(s, .; theta): one output per action (Section 4.1), so one forward pass scores every action.
    Screens go through a convolutional torso (`image_torso`); vectors through a two-layer MLP."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, hidden: int, hidden2: int | None = None):
        super().__init__()
        if len(obs_shape) == 3:
            torso: nn.Module = image_torso(obs_shape)
            width = torso.out_features
        else:
            width = hidden2 or hidden
            torso = nn.Sequential(nn.Linear(int(np.prod(obs_shape)), hidden), nn.ReLU(), nn.Linear(hidden, width), nn.ReLU())
        self.torso = torso
        self.head = nn.Linear(width, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs))


class DQN(SafetensorsModule):
    """The trained thing: the online Q network and its target copy."""

    def __init__(self, cfg: Config, obs_shape: tuple[int, ...], n_actions: int):
        super().__init__()
        self.q = QNetwork(obs_shape, n_actions, cfg.hidden, cfg.hidden2)
        self.q_target = QNetwork(obs_shape, n_actions, cfg.hidden, cfg.hidden2)
        self.q_target.load_state_dict(self.q.state_dict())
        self.q_target.requires_grad_(False)
        self.n_actions = n_actions
        self.eps_end = cfg.eps_end

    @torch.inference_mode()
    def greedy(self, obs: np.ndarray) -> int:
        x = torch.as_tensor(np.asarray(obs), device=self.q.head.weight.device).unsqueeze(0)
        if x.dtype != torch.uint8:  # screens stay uint8 (the torso converts them); vectors become float32
            x = x.float()
        return int(self.q(x).argmax(dim=1).item())

    def act(self, obs: np.ndarray, deterministic: bool = True) -> int:
        """Greedy; with deterministic=False, epsilon-greedy at the final training epsilon."""
        if not deterministic and np.random.random() < self.eps_end:
            return int(np.random.randint(self.n_actions))
        return self.greedy(obs)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.q.parameters())


def make_optimizer(params, cfg: Config) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":
        # Centred RMSProp (Graves 2013), as DeepMind's DQN code; torch adds eps outside the square root.
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps, centered=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    raise ValueError(f"config field 'optimizer': {cfg.optimizer!r} is not one of 'rmsprop', 'adam'")


class Learner:
    """The gradient step of Algorithm 1 on a replayed minibatch."""

    def __init__(self, agent: DQN, cfg: Config):
        self.agent, self.cfg = agent, cfg
        self.opt = make_optimizer(agent.q.parameters(), cfg)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        agent, cfg = self.agent, self.cfg
        with torch.no_grad():
            y = q_target(batch["rewards"], batch["terminated"], agent.q_target(batch["next_obs"]), cfg.gamma)
        q_taken = agent.q(batch["obs"]).gather(1, batch["actions"].long().unsqueeze(1)).squeeze(1)
        loss = td_loss(q_taken, y, cfg.loss)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(agent.q.parameters(), cfg.max_grad_norm)
        self.opt.step()
        return {"loss": loss.detach(), "q": q_taken.detach().mean()}

    def sync_target(self) -> None:
        self.agent.q_target.load_state_dict(self.agent.q.state_dict())


def data_fingerprint(cfg: Config) -> str:
    """The contract's data hook: the env the config names, with the versions that define it."""
    return minatar.env_fingerprint(cfg.env_id) if minatar.is_minatar(cfg.env_id) else env_data_fingerprint(cfg)


def env_spaces(env_id: str) -> tuple[tuple[int, ...], int, torch.dtype]:
    env = make_agent_env(env_id, training=False)
    try:
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(f"DQN needs a discrete action space; {env_id!r} has {env.action_space}")
        space = env.observation_space
        dtype = torch.uint8 if space.dtype == np.uint8 else torch.float32
        return tuple(space.shape), int(env.action_space.n), dtype
    finally:
        env.close()


def build(cfg: Config) -> DQN:
    obs_shape, n_actions, _ = env_spaces(cfg.env_id)
    return DQN(cfg, obs_shape, n_actions)


def train(cfg: Config, run) -> DQN:
    env = make_agent_env(cfg.env_id, training=True)
    obs_shape, n_actions, obs_dtype = env_spaces(cfg.env_id)
    agent = DQN(cfg, obs_shape, n_actions).to(run.device)
    learner = Learner(agent, cfg)
    buffer = ReplayBuffer(min(cfg.buffer_size, cfg.total_steps), obs_shape, (), seed=run.seed,
                          obs_dtype=obs_dtype, action_dtype=torch.long)
    explore = torch.Generator().manual_seed(run.seed)  # epsilon coin flips and random actions
    step, episode = 0, 0

    def checkpoint_state() -> dict:
        return {"agent": agent.state_dict(), "opt": learner.opt.state_dict(), "buffer": buffer.state_dict(),
                "explore": explore.get_state(), "torch_rng": torch.get_rng_state(), "step": step, "episode": episode}

    resumed = run.resume_state()
    if resumed is not None:  # checkpoints are taken where a game ended (see episode_seed)
        agent.load_state_dict(resumed["agent"])
        learner.opt.load_state_dict(resumed["opt"])
        buffer.load_state_dict(resumed["buffer"])
        explore.set_state(resumed["explore"])
        torch.set_rng_state(resumed["torch_rng"])
        step, episode = int(resumed["step"]), int(resumed["episode"])

    run.progress(cfg.total_steps)
    obs, _ = env.reset(seed=episode_seed(run.seed, episode))
    episode_return, metrics = 0.0, {}
    while step < cfg.total_steps:
        explore_now = step < cfg.learning_starts or torch.rand((), generator=explore).item() < epsilon_at(step, cfg)
        if explore_now:
            action = int(torch.randint(n_actions, (), generator=explore).item())
        else:
            action = agent.greedy(obs)
        next_obs, reward, terminated, truncated, info = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated)
        obs, episode_return, step = next_obs, episode_return + float(reward), step + 1

        if step % cfg.target_update_interval == 0:
            learner.sync_target()
        if step > cfg.learning_starts and step % cfg.train_freq == 0:
            for _ in range(cfg.gradient_steps):
                metrics = learner.update(buffer.sample(cfg.batch_size, run.device))
        if metrics and step % cfg.log_every == 0:
            run.log(step, epsilon=epsilon_at(step, cfg), **{k: v.item() for k, v in metrics.items()})

        if terminated or truncated:
            if info.get("game_over", True):  # a whole game (or episode) ended: a clean boundary
                run.log(step, train_return=episode_return)
                episode, episode_return = episode + 1, 0.0
                obs, _ = env.reset(seed=episode_seed(run.seed, episode))
                run.maybe_checkpoint(step, checkpoint_state)
            else:  # a life lost: terminal for learning, the game goes on
                obs, _ = env.reset()
        run.advance()
    env.close()
    return agent


def dry_run_step(agent: DQN, cfg: Config) -> dict[str, float]:
    """One gradient step on a tiny random batch (for `--dry-run` of tiers that cannot run here)."""
    obs_shape, n_actions, obs_dtype = env_spaces(cfg.env_id)
    n = 8
    if obs_dtype == torch.uint8:
        obs, next_obs = (torch.randint(0, 256, (n, *obs_shape), dtype=torch.uint8) for _ in range(2))
    else:
        obs, next_obs = torch.randn(n, *obs_shape), torch.randn(n, *obs_shape)
    batch = {"obs": obs, "actions": torch.randint(n_actions, (n,)), "rewards": torch.randn(n),
             "next_obs": next_obs, "terminated": torch.zeros(n)}
    return {k: v.item() for k, v in Learner(agent, cfg).update(batch).items()}
