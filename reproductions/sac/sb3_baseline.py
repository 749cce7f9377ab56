"""The `sb3` arm: Stable-Baselines3's SAC with our Config's hyper-parameters, budget and seed.

Its weights are exported to safetensors (SB3's own zip format is pickled), and it is scored by
the same evaluator as ours.
"""

from __future__ import annotations

import numpy as np
from safetensors.torch import load_file, save_file
from stable_baselines3 import SAC as SB3SAC
from stable_baselines3.common.callbacks import BaseCallback

from reproductions.common.envs import make_env
from reproductions.sac.sac import Config, data_fingerprint  # noqa: F401  (the harness reads them here too)


class SB3Agent:
    def __init__(self, model: SB3SAC):
        self.model = model

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=deterministic)
        return action

    def num_parameters(self) -> int:
        policy = self.model.policy
        return sum(p.numel() for m in (policy.actor, policy.critic) for p in m.parameters()) + 1

    def save(self, path) -> None:
        save_file({k: v.contiguous() for k, v in self.model.policy.state_dict().items()}, str(path))

    def load(self, path) -> "SB3Agent":
        self.model.policy.load_state_dict(load_file(str(path)))
        return self


def build(cfg: Config, seed: int = 0, device: str = "cpu") -> SB3Agent:
    model = SB3SAC(
        "MlpPolicy", make_env(cfg.env_id), learning_rate=cfg.lr, buffer_size=min(cfg.buffer_size, cfg.total_steps),
        learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, tau=cfg.tau, gamma=cfg.gamma,
        train_freq=1, gradient_steps=cfg.gradient_steps, ent_coef=f"auto_{cfg.init_alpha}",
        target_entropy="auto" if cfg.target_entropy is None else cfg.target_entropy,
        policy_kwargs={"net_arch": [cfg.hidden, cfg.hidden]}, seed=seed, device=device, verbose=0,
    )
    return SB3Agent(model)


class _Report(BaseCallback):
    """Feeds SB3's training episodes and losses into the harness's log and progress bar."""

    def __init__(self, run, cfg: Config):
        super().__init__()
        self.run, self.cfg = run, cfg

    def _on_step(self) -> bool:
        step = self.num_timesteps
        for info in self.locals.get("infos", []):
            if "episode" in info:
                self.run.log(step, train_return=float(info["episode"]["r"]))
        if step > self.cfg.learning_starts and step % self.cfg.log_every == 0:
            values = {k.split("/")[-1]: v for k, v in self.logger.name_to_value.items() if k.startswith("train/")}
            renamed = {"critic_loss": values.get("critic_loss"), "actor_loss": values.get("actor_loss"),
                       "alpha": values.get("ent_coef")}
            self.run.log(step, **{k: v for k, v in renamed.items() if v is not None})
        self.run.advance()
        return True


def train(cfg: Config, run) -> SB3Agent:
    """No mid-run checkpoints or resume: SB3 keeps its own state (and pickles it)."""
    agent = build(cfg, seed=run.seed, device=str(run.device))
    run.progress(cfg.total_steps)
    agent.model.learn(total_timesteps=cfg.total_steps, callback=_Report(run, cfg))
    return agent
