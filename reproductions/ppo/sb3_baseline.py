"""The `sb3` arm: Stable-Baselines3's PPO with our Config's hyper-parameters, budget and seed.

Same actors (the same env ids and seeds, seed + i for actor i), the same networks (separate
64-64 tanh policy and value MLPs, orthogonal initialisation, state-independent log std), the same
schedule. Weights are exported to safetensors (SB3's own zip format is pickled), and it is scored
by the same evaluator as ours.
"""

from __future__ import annotations

import math
from functools import partial

import torch.nn as nn
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3.common.env_util import make_vec_env

from evals.tasks.atari import make_agent_env
from reproductions.common.sb3 import Logging, SB3Agent, learn
from reproductions.ppo.ppo import Config, data_fingerprint  # noqa: F401  (the harness reads them here too)


def _schedule(value: float, anneal: bool):
    """SB3 calls a schedule with the fraction of training left (1 -> 0): the paper's alpha."""
    return (lambda remaining: value * remaining) if anneal else value


def build(cfg: Config, seed: int = 0, device: str = "cpu") -> SB3Agent:
    probe = make_agent_env(cfg.env_id, training=False)
    image = len(probe.observation_space.shape) == 3
    probe.close()
    if image:
        raise ValueError(f"{cfg.env_id!r}: the sb3 arm covers vector observations only (the mini tier's tasks)")
    envs = make_vec_env(partial(make_agent_env, cfg.env_id, True), n_envs=cfg.num_envs, seed=seed)
    model = SB3PPO(
        "MlpPolicy", envs, learning_rate=_schedule(cfg.lr, cfg.anneal), n_steps=cfg.num_steps,
        batch_size=cfg.minibatch_size, n_epochs=cfg.epochs, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
        clip_range=_schedule(cfg.clip_ratio, cfg.anneal), normalize_advantage=cfg.normalize_advantage,
        ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef,
        max_grad_norm=math.inf if cfg.max_grad_norm is None else cfg.max_grad_norm,
        policy_kwargs={"net_arch": {"pi": [cfg.hidden, cfg.hidden], "vf": [cfg.hidden, cfg.hidden]},
                       "activation_fn": nn.Tanh},
        seed=seed, device=device, verbose=0,
    )
    return SB3Agent(model)


LOGGED = {"policy_loss": "train/policy_gradient_loss", "value_loss": "train/value_loss",
          "clip_fraction": "train/clip_fraction"}


def train(cfg: Config, run) -> SB3Agent:
    agent = build(cfg, seed=run.seed, device=str(run.device))
    batch = cfg.num_envs * cfg.num_steps
    return learn(agent, run, cfg.total_steps // batch * batch, Logging(LOGGED, at_rollout_end=True))
