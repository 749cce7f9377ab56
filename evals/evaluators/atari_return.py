"""Episodic return under DQN's evaluation protocol: epsilon-greedy play, no-op starts on Atari.

Protocol: whole episodes of the env's own (unclipped) score, ended by game over or the env's time
limit. Each action is uniformly random with probability `epsilon` (0.05 in the DQN paper) and the
agent's own action otherwise; the random draws come from a generator seeded by `seed_base`, and
episode i is reset with seed `seed_base + i`, so every run and arm faces the same starts. ALE
games go through the shared Atari pipeline in evaluation mode (84x84 grey, skip 4, stack 4, no
reward clipping, no life-loss terminal, up to `noop_max` no-op actions at the start); other envs
are used as they are. With epsilon 0 on a non-Atari env this is `rl_return`'s protocol.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import Actor, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks.atari import is_atari, make_atari
from evals.tasks.envs import make_env


class AtariReturnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    episodes: int = Field(10, ge=1)
    epsilon: float = Field(0.05, ge=0.0, le=1.0)
    noop_max: int = Field(30, ge=0)
    deterministic: bool = True
    seed_base: int = 1_000_000
    max_episode_steps: int | None = Field(None, ge=1)  # None: to game over or the env's own limit (a dry run's budget sets it)


def tiny(options: AtariReturnOptions) -> AtariReturnOptions:
    """A dry run's budget: one episode of at most 20 steps."""
    return shrunk(options, episodes=1, max_episode_steps=20)


def play(env: gym.Env, act, seeds: list[int], epsilon: float, rng: np.random.Generator) -> tuple[list[float], list[int]]:
    returns, lengths = [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(int(rng.integers(2**31)))
        total, steps, done = 0.0, 0, False
        while not done:
            action = env.action_space.sample() if rng.random() < epsilon else act(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            steps += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
    return returns, lengths


def derive(result: EvalResult) -> dict[str, float]:
    return {"best_return": max(result.samples["return"])} if result.samples else {}


@register("atari_return", version=1, options=AtariReturnOptions, derive=derive, tiny=tiny,
          metric_names=lambda o: ["return", "best_return", "episode_length"])
def atari_return(agent, config, options: AtariReturnOptions) -> Measured:
    actor = capability(agent, Actor, "atari_return")
    atari = is_atari(config.env_id)
    env = make_atari(config.env_id, training=False, noop_max=options.noop_max) if atari else make_env(config.env_id)
    if options.max_episode_steps:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=options.max_episode_steps)
    seeds = [options.seed_base + i for i in range(options.episodes)]
    try:
        returns, lengths = play(env, lambda obs: actor.act(obs, deterministic=options.deterministic), seeds,
                                options.epsilon, np.random.default_rng(options.seed_base))
    finally:
        env.close()
    protocol = {
        "env_id": config.env_id,
        "gymnasium": gym.__version__,
        "episodes": options.episodes,
        "reset_seeds": f"{seeds[0]}..{seeds[-1]}",
        "epsilon": options.epsilon,
        "actions": f"uniformly random with probability {options.epsilon:g}, else the agent's "
                   + ("deterministic (greedy / mean) action" if options.deterministic else "sampled action"),
        "return": "undiscounted sum of the env's own score, to game over or time limit",
    }
    if options.max_episode_steps:
        protocol["max_episode_steps"] = options.max_episode_steps
    if atari:
        import ale_py

        protocol.update({
            "ale_py": ale_py.__version__,
            "preprocessing": "84x84 grey, frame skip 4 with max over the last 2 frames, stack of 4",
            "noop_starts": f"1..{options.noop_max} no-op actions at reset" if options.noop_max else "none",
            "sticky_actions": 0.0,
            "reward_clipping": "none (game score)",
            "life_loss": "not terminal (whole games)",
        })
    return Measured(metrics={"return": float(np.mean(returns)), "best_return": float(np.max(returns)),
                 "episode_length": float(np.mean(lengths))},
        samples={"return": returns, "episode_length": [float(x) for x in lengths]},
        protocol=protocol,
    )
