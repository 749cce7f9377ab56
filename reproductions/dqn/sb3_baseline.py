"""The `sb3` arms: Stable-Baselines3's DQN with our Config's hyper-parameters, loss, budget and seed.

It acts in the same envs (the shared Atari pipeline on ALE games, the same MinAtar envs), with the
same network (the paper's convolutional torso on Atari frames, its MinAtar-scaled torso on MinAtar
grids, the same MLP on vectors), optimizer and schedule. Its weights are exported to safetensors
(SB3's own zip format is pickled), and it is scored by the same evaluator as ours.

The loss is the config's (`build` picks the class from `cfg.loss`). SB3's DQN has one loss, the
Huber loss (`F.smooth_l1_loss` in `DQN.train`): `loss: huber` runs SB3's DQN as it is (the MinAtar
and Pong arms). CleanRL's CartPole setting, the mini tier's, is tuned for the squared error of eq.
(3), and under it SB3's Huber loss diverges: the Q-values grow without bound (about 1e5 after 100k
steps; a Huber loss of about 1e7 at 500k, where the true values are at most 100), the greedy policy
pushes one way, and every seed scored the 9.4 of that policy (the first v2 records, seeds 1-4),
while the same SB3 DQN with the squared error learns (README, "The sb3 arm on CartPole"). So that
the CartPole arm differs from ours in nothing but the implementation, `loss: mse` runs
`SquaredErrorDQN`: SB3's DQN whose `train` takes the squared error in place of the Huber loss, and
nothing else (SB3's rollouts, replay buffer, epsilon schedule and target copies, the same
hyper-parameters). Any other loss is an error naming the config field.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from unittest import mock

import torch
import torch.nn.functional as F
from stable_baselines3 import DQN as SB3DQN
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn import dqn as sb3_dqn_module

from evals.tasks.atari import make_agent_env
from reproductions.common.sb3 import Logging, SB3Agent, learn
from reproductions.dqn.dqn import Config, data_fingerprint, image_torso, required_data  # noqa: F401  (the harness reads them here too)


class PaperTorso(BaseFeaturesExtractor):
    """Our convolutional torso (`image_torso`: the paper's, or its MinAtar scaling) as an SB3 features extractor."""

    def __init__(self, observation_space):
        torso = image_torso(tuple(observation_space.shape))
        super().__init__(observation_space, torso.out_features)
        self.torso = torso

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.torso(observations)


class SquaredErrorDQN(SB3DQN):
    """SB3's DQN with the squared error of eq. (3): SB3's own `train`, run with the name its module
    calls for the loss, `F.smooth_l1_loss`, bound to `F.mse_loss` (in SB3's module only, for the call)."""

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        squared_error = SimpleNamespace(**{**vars(F), "smooth_l1_loss": F.mse_loss})
        with mock.patch.object(sb3_dqn_module, "F", squared_error):
            super().train(gradient_steps, batch_size)


def sb3_class(loss: str) -> type[SB3DQN]:
    """SB3's DQN for the Huber loss (its own), `SquaredErrorDQN` for the squared error."""
    if loss == "huber":
        return SB3DQN
    if loss == "mse":
        return SquaredErrorDQN
    raise ValueError(f"config field 'loss': {loss!r} is not one of 'huber' (Stable-Baselines3's DQN) "
                     "and 'mse' (SquaredErrorDQN)")


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
    algo = sb3_class(cfg.loss)
    env = make_agent_env(cfg.env_id, training=True)
    image = len(env.observation_space.shape) == 3
    model = algo(
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
