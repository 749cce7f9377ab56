"""The `sb3` arms: Stable-Baselines3's SAC with our Config's hyper-parameters, budget and seed."""

from __future__ import annotations

from stable_baselines3 import SAC as SB3SAC

from evals.tasks.envs import make_env
from reproductions.common.sb3 import Logging, SB3Agent, learn
from reproductions.sac.sac import Config, data_fingerprint  # noqa: F401  (the harness reads them here too)

LOGGED = {"critic_loss": "train/critic_loss", "actor_loss": "train/actor_loss", "alpha": "train/ent_coef"}


def build(cfg: Config, seed: int = 0, device: str = "cpu") -> SB3Agent:
    return SB3Agent(SB3SAC(
        "MlpPolicy", make_env(cfg.env_id), learning_rate=cfg.lr, buffer_size=min(cfg.buffer_size, cfg.total_steps),
        learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, tau=cfg.tau, gamma=cfg.gamma,
        train_freq=1, gradient_steps=cfg.gradient_steps, ent_coef=f"auto_{cfg.init_alpha}",
        target_entropy="auto" if cfg.target_entropy is None else cfg.target_entropy,
        policy_kwargs={"net_arch": [cfg.hidden, cfg.hidden]}, seed=seed, device=device, verbose=0,
    ))


def train(cfg: Config, run) -> SB3Agent:
    agent = build(cfg, seed=run.seed, device=str(run.device))
    return learn(agent, run, cfg.total_steps, Logging(LOGGED, cfg.log_every, cfg.learning_starts))
