"""MinAtar (Young and Tian 2019, arXiv 1903.03176): five Atari games played on a 10x10 grid, the
field's miniature of the ALE for learning from the screen at CPU scale. Shared by training and
the evaluators.

The screen is a 10x10 grid of C object channels (Breakout: paddle, ball, trail, bricks), each
cell 0 or 1. MinAtar's own Gymnasium env (`minatar.gym.BaseEnv`, v1: the game's minimal action
set) returns it as a boolean 10x10xC array; here it is turned channel-first uint8 (C, 10, 10),
the layout a torch convolution reads, and registered with Gymnasium as `MinAtar-<Game>-v1`.
MinAtar's defaults are kept: sticky actions with probability 0.1 (the previous action repeats)
and difficulty ramping. Each reset also restarts the sticky-action memory (MinAtar keeps the
last action of the previous episode), so an episode depends only on its reset seed.

Configs name these envs as `evals.tasks.minatar:MinAtar-Breakout-v1`: Gymnasium imports this
module (which registers them) before it makes the env, so any code that makes the env from the
config, an evaluator included, finds it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

GAMES = {"Asterix": "asterix", "Breakout": "breakout", "Freeway": "freeway", "Seaquest": "seaquest",
         "SpaceInvaders": "space_invaders"}
MAX_EPISODE_STEPS = 10_000  # a safeguard: a MinAtar game has no time limit of its own
PREFIX = f"{__name__}:"


class ChannelFirst(gym.ObservationWrapper):
    """MinAtar's boolean (10, 10, C) grid as a uint8 (C, 10, 10) array of 0s and 1s."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 1, shape=(c, h, w), dtype=np.uint8)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(obs, (2, 0, 1)), dtype=np.uint8)

    def reset(self, **kwargs):
        self.env.unwrapped.game.last_action = 0  # no sticky action carried over from the last episode
        return super().reset(**kwargs)


def make_minatar(game: str) -> gym.Env:
    """One MinAtar game (its module name, e.g. "breakout") with the minimal action set, channel-first."""
    from minatar.gym import BaseEnv

    return ChannelFirst(BaseEnv(game, use_minimal_action_set=True))


for _name, _game in GAMES.items():
    gym.register(id=f"MinAtar-{_name}-v1", entry_point=make_minatar, kwargs={"game": _game},
                 max_episode_steps=MAX_EPISODE_STEPS)


def is_minatar(env_id: str) -> bool:
    return env_id.startswith(PREFIX)


def env_fingerprint(env_id: str) -> str:
    """What a run's MinAtar environment is, for the record: the env id and the versions that define it."""
    from importlib.metadata import version

    return f"{env_id} (gymnasium {gym.__version__}, MinAtar {version('minatar')})"
