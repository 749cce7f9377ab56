"""Evaluation rollouts: whole episodes with a fixed policy on fixed reset seeds."""

from __future__ import annotations

from typing import Callable

import numpy as np

from evals.tasks.envs import make_env


def run_episodes(env_id: str, act: Callable[[np.ndarray], np.ndarray], seeds: list[int],
                 env_kwargs: dict | None = None) -> tuple[list[float], list[int]]:
    """Undiscounted return and length of one episode per reset seed."""
    env = make_env(env_id, **(env_kwargs or {}))
    returns, lengths = [], []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            total, steps, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(act(obs))
                total += float(reward)
                steps += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(steps)
    finally:
        env.close()
    return returns, lengths
