"""The `sb3` arm: Stable-Baselines3's DQN with our Config's hyper-parameters, budget and seed.

It acts in the same envs (the shared Atari pipeline on ALE games, the same MinAtar envs), with the
same network (the paper's convolutional torso on Atari frames, its MinAtar-scaled torso on MinAtar
grids, the same MLP on vectors), optimizer and schedule. Its loss is SB3's only one, the Huber loss. Its
weights are exported to safetensors (SB3's own zip format is pickled), and it is scored by the
same evaluator as ours.
"""

from __future__ import annotations

import math

import torch
from stable_baselines3 import DQN as SB3DQN
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from evals.tasks.atari import make_agent_env
from reproductions.common.sb3 import Logging, SB3Agent, learn
from reproductions.dqn.dqn import Config, data_fingerprint, image_torso  # noqa: F401  (the harness reads them here too)


class PaperTorso(BaseFeaturesExtractor):
    """Our convolutional torso (`image_torso`: the paper's, or its MinAtar scaling) as an SB3 features extractor."""

    def __init__(self, observation_space):
        torso = image_torso(tuple(observation_space.shape))
        super().__init__(observation_space, torso.out_features)
        self.torso = torso

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.torso(observations)


def policy_kwargs(cfg: Config, image: bool) -> dict:
    if cfg.optimizer == "rmsprop":
        opt = {"optimizer_class": torch.optim.RMSprop,
               "optimizer_kwargs": {"alpha": cfg.rmsprop_alpha, "eps": cfg.rmsprop_eps, "centered": True}}
    else:
        opt = {"optimizer_class": torch.optim.Adam}
    if image:  # our torso converts the uint8 screens itself
        return {"features_extractor_class": PaperTorso, "net_arch": [], "normalize_images": False, **opt}
    return {"net_arch": [cfg.hidden, cfg.hidden2 or cfg.hidden], **opt}


def build(cfg: Config, seed: int = 0, device: str = "cpu") -> SB3Agent:
    if cfg.loss != "huber":
        raise ValueError("config field 'loss': Stable-Baselines3's DQN has only the Huber loss")
    env = make_agent_env(cfg.env_id, training=True)
    image = len(env.observation_space.shape) == 3
    model = SB3DQN(
        "CnnPolicy" if image else "MlpPolicy", env, learning_rate=cfg.lr,
        buffer_size=min(cfg.buffer_size, cfg.total_steps), learning_starts=cfg.learning_starts,
        batch_size=cfg.batch_size, tau=1.0, gamma=cfg.gamma, train_freq=cfg.train_freq,
        gradient_steps=cfg.gradient_steps, target_update_interval=cfg.target_update_interval,
        exploration_fraction=cfg.exploration_steps / cfg.total_steps, exploration_initial_eps=cfg.eps_start,
        exploration_final_eps=cfg.eps_end, max_grad_norm=math.inf if cfg.max_grad_norm is None else cfg.max_grad_norm,
        policy_kwargs=policy_kwargs(cfg, image), seed=seed, device=device, verbose=0,
    )
    return SB3Agent(model, counted=model.q_net)


LOGGED = {"loss": "train/loss", "epsilon": "rollout/exploration_rate"}


def train(cfg: Config, run) -> SB3Agent:
    agent = build(cfg, seed=run.seed, device=str(run.device))
    return learn(agent, run, cfg.total_steps, Logging(LOGGED, cfg.log_every, cfg.learning_starts, whole_games=True))
