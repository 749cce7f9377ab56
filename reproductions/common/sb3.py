"""Stable-Baselines3 baseline arms: train through the harness, weights out as safetensors.

SB3's own save format pickles; our baseline arms export the policy's state dict instead, and are
scored by the same evaluators as ours.
"""

from __future__ import annotations

import numpy as np
from safetensors.torch import load_file, save_file
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback


class SB3Agent:
    def __init__(self, model: BaseAlgorithm):
        self.model = model

    def act(self, obs: np.ndarray, deterministic: bool = True):
        action, _ = self.model.predict(obs, deterministic=deterministic)
        return action

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.policy.parameters())

    def save(self, path) -> None:
        save_file({k: v.contiguous() for k, v in self.model.policy.state_dict().items()}, str(path))

    def load(self, path) -> "SB3Agent":
        self.model.policy.load_state_dict(load_file(str(path)))
        return self


class HarnessCallback(BaseCallback):
    """Feeds SB3's finished training episodes (from its Monitor wrapper) and chosen logger values
    into the harness's log and progress bar. `logged` maps our metric names to SB3 logger keys."""

    def __init__(self, run, log_every: int, learning_starts: int, logged: dict[str, str]):
        super().__init__()
        self.run, self.log_every, self.learning_starts, self.logged = run, log_every, learning_starts, logged

    def _on_step(self) -> bool:
        step = self.num_timesteps
        for info in self.locals.get("infos", []):
            if "episode" in info:
                self.run.log(step, train_return=float(info["episode"]["r"]))
        if step > self.learning_starts and step % self.log_every == 0:
            values = self.logger.name_to_value
            self.run.log(step, **{ours: values[key] for ours, key in self.logged.items() if key in values})
        self.run.advance()
        return True


def learn(agent: SB3Agent, run, total_steps: int, log_every: int, learning_starts: int, logged: dict[str, str]) -> SB3Agent:
    """SB3's own loop, no mid-run checkpoints or resume (SB3 keeps, and pickles, its own state)."""
    run.progress(total_steps)
    agent.model.learn(total_timesteps=total_steps, callback=HarnessCallback(run, log_every, learning_starts, logged))
    return agent
