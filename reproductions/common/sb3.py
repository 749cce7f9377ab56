"""The Stable-Baselines3 baseline kit: SB3's algorithms as baseline arms of the harness.

Every RL paper's `sb3` arm builds an SB3 model from its own Config and hands it here:
- `SB3Agent` acts like our agents (the evaluators' `Actor`) and saves its policy's state dict to
  safetensors (SB3's own zip format pickles, and nothing of a contributor's is ever unpickled);
- `learn` runs SB3's own loop with `HarnessCallback`, which feeds SB3's training episodes and the
  logger values the arm names into the run's log and progress bar. No mid-run checkpoints or
  resume: SB3 keeps its own state, and pickles it.

Episodes are counted either from SB3's Monitor (`info["episode"]`), or, for Atari games whose
training env ends an episode at each lost life, as whole games (`whole_games=True`: the rewards
of the first env summed up to `info["game_over"]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.nn as nn
from safetensors.torch import load_file, save_file
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback


class SB3Agent:
    def __init__(self, model: BaseAlgorithm, counted: nn.Module | None = None):
        self.model = model
        self.counted = counted or model.policy  # DQN: the online Q-network, not its target copy

    def act(self, obs: np.ndarray, deterministic: bool = True):
        action, _ = self.model.predict(obs, deterministic=deterministic)
        return action if action.shape else int(action)  # a discrete action as a plain int

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.counted.parameters())

    def save(self, path) -> None:
        save_file({k: v.contiguous() for k, v in self.model.policy.state_dict().items()}, str(path))

    def load(self, path) -> "SB3Agent":
        self.model.policy.load_state_dict(load_file(str(path)))
        return self


@dataclass
class Logging:
    """What an arm logs from SB3: `logged` maps our metric names to SB3 logger keys, read every
    `log_every` steps past `learning_starts` (off-policy arms) or after each rollout (on-policy
    arms, `at_rollout_end=True`: the previous update's values)."""

    logged: dict[str, str] = field(default_factory=dict)
    log_every: int = 0
    learning_starts: int = 0
    at_rollout_end: bool = False
    whole_games: bool = False


class HarnessCallback(BaseCallback):
    def __init__(self, run, logging: Logging):
        super().__init__()
        self.run, self.logging = run, logging
        self.game_return = 0.0

    def _values(self) -> dict[str, float]:
        values = self.logger.name_to_value
        return {ours: values[key] for ours, key in self.logging.logged.items() if key in values}

    def _log_episodes(self, step: int) -> None:
        if self.logging.whole_games:
            self.game_return += float(self.locals["rewards"][0])
            if self.locals["dones"][0] and self.locals["infos"][0].get("game_over", True):
                self.run.log(step, train_return=self.game_return)
                self.game_return = 0.0
            return
        for info in self.locals.get("infos", []):
            if "episode" in info:
                self.run.log(step, train_return=float(info["episode"]["r"]))

    def _on_step(self) -> bool:
        step = self.num_timesteps
        self._log_episodes(step)
        every = self.logging.log_every
        if not self.logging.at_rollout_end and every and step > self.logging.learning_starts and step % every == 0:
            self.run.log(step, **self._values())
        self.run.advance(self.training_env.num_envs)
        return True

    def _on_rollout_end(self) -> None:
        values = self._values()
        if self.logging.at_rollout_end and len(values) == len(self.logging.logged):
            self.run.log(self.num_timesteps, **values)


def learn(agent: SB3Agent, run, total_steps: int, logging: Logging) -> SB3Agent:
    run.progress(total_steps)
    agent.model.learn(total_timesteps=total_steps, callback=HarnessCallback(run, logging))
    return agent
