"""Gymnasium environment construction shared by the RL papers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def make_env(env_id: str, **kwargs) -> gym.Env:
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as e:
        raise ValueError(f"cannot make environment {env_id!r}: {e}") from None


def episode_seed(run_seed: int, episode: int) -> int:
    """The reset seed of training episode `episode`. Seeding every reset (not only the first)
    makes an episode's start depend on nothing but (seed, episode), so a run resumed from a
    checkpoint at an episode boundary continues exactly as the uninterrupted run would."""
    return int(np.random.SeedSequence([run_seed, episode]).generate_state(1)[0])


def box_bounds(space: gym.spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"expected a continuous (Box) action space, got {space}")
    return space.low.astype(np.float32), space.high.astype(np.float32)
