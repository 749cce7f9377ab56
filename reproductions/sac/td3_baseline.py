"""The `td3_*` arms: Stable-Baselines3's TD3 (Fujimoto et al. 2018), the deterministic off-policy
baseline of the paper's Figure 1, at our SAC's budget, network size, batch, learning rate, tau,
gamma, replay size, random warm-up and seeds.

TD3's own hyper-parameters are its authors' (Fujimoto et al., arXiv 1802.09477, and their
reference code, whose current defaults also use two hidden layers of 256, Adam 3e-4 and batch 256):
the actor and the target networks update every second critic step, the target action gets
clipped Gaussian smoothing noise N(0, 0.2) clipped to +-0.5, and exploration adds N(0, 0.1) to the
deterministic action (SB3 adds it in the [-1, 1] normalised action space, i.e. 0.1 of the half-range).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from stable_baselines3 import TD3
from stable_baselines3.common.noise import NormalActionNoise

from evals.tasks.envs import make_env
from reproductions.common.sb3 import Logging, SB3Agent, learn
from reproductions.sac import sac
from reproductions.sac.sac import data_fingerprint  # noqa: F401  (the harness reads it here too)

LOGGED = {"critic_loss": "train/critic_loss", "actor_loss": "train/actor_loss"}


@dataclass
class Config(sac.Config):
    """sac.Config (its temperature fields are unused here) and TD3's own hyper-parameters."""

    policy_delay: int = 2              # critic steps per actor and target update
    target_policy_noise: float = 0.2   # std of the target-action smoothing noise
    target_noise_clip: float = 0.5     # ... clipped to this
    exploration_noise: float = 0.1     # std of the Gaussian added to the action when acting


def build(cfg: Config, seed: int = 0, device: str = "cpu") -> SB3Agent:
    env = make_env(cfg.env_id)
    act_dim = int(np.prod(env.action_space.shape))
    noise = NormalActionNoise(mean=np.zeros(act_dim), sigma=cfg.exploration_noise * np.ones(act_dim))
    return SB3Agent(TD3(
        "MlpPolicy", env, learning_rate=cfg.lr, buffer_size=min(cfg.buffer_size, cfg.total_steps),
        learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, tau=cfg.tau, gamma=cfg.gamma,
        train_freq=1, gradient_steps=cfg.gradient_steps, action_noise=noise, policy_delay=cfg.policy_delay,
        target_policy_noise=cfg.target_policy_noise, target_noise_clip=cfg.target_noise_clip,
        policy_kwargs={"net_arch": [cfg.hidden, cfg.hidden]}, seed=seed, device=device, verbose=0,
    ))


def train(cfg: Config, run) -> SB3Agent:
    agent = build(cfg, seed=run.seed, device=str(run.device))
    return learn(agent, run, cfg.total_steps, Logging(LOGGED, cfg.log_every, cfg.learning_starts))
