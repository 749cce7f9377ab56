"""The Atari pipeline of DQN (arXiv 1312.5602, Section 4.1), shared by the RL papers.

From the emulator's 210x160 RGB frames to what the agent sees:
- each action is repeated for k = 4 frames (frame skip), and the last two frames are max-pooled
  (Atari sprites flicker between frames);
- the screen is turned grey and down-sampled to 84x84;
- the last 4 processed frames are stacked: the agent's state is a 4x84x84 uint8 array;
- training rewards are clipped to [-1, 1] (one learning rate for every game's score scale), and a
  lost life ends a training episode (the game itself goes on);
- every episode starts with up to 30 no-op actions, so the starting states differ.
Evaluation plays whole games with the game's own score (no clipping, no life-loss terminal).

Gymnasium's `AtariPreprocessing` does the skip, max-pool, grey, resize and no-op starts (it needs
an ALE env made with frameskip=1); `FrameStackObservation` stacks; `ClipReward` clips.
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing, ClipReward, FrameStackObservation

from evals.tasks.envs import make_env

FRAME_SKIP = 4
SCREEN_SIZE = 84
FRAME_STACK = 4


def _register_ale() -> None:
    import ale_py

    gym.register_envs(ale_py)


def is_atari(env_id: str) -> bool:
    _register_ale()
    try:
        return str(gym.spec(env_id).entry_point).startswith("ale_py")
    except gym.error.Error:
        return False


class EpisodicLife(gym.Wrapper):
    """A lost life is a terminal transition for learning, but the game goes on: `reset` after a
    life loss takes one no-op step instead of restarting the game. `info["game_over"]` says
    whether the game (not just the life) ended, so the training loop knows a real boundary."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        life_lost = 0 < lives < self.lives
        self.lives = lives
        info["game_over"] = self.game_over
        return obs, reward, terminated or life_lost, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # the next life: continue the same game
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        self.game_over = False
        return obs, info


def make_atari(env_id: str, training: bool, noop_max: int = 30, repeat_action_probability: float = 0.0) -> gym.Env:
    """The pipeline above on an ALE env. `repeat_action_probability=0` turns off v5's sticky actions
    (the paper's emulator was deterministic; the no-op starts give the randomness)."""
    _register_ale()
    env = make_env(env_id, frameskip=1, repeat_action_probability=repeat_action_probability)
    env = AtariPreprocessing(env, noop_max=noop_max, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE,
                             terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
    if training:
        env = ClipReward(EpisodicLife(env), -1.0, 1.0)
    return FrameStackObservation(env, FRAME_STACK)


def make_agent_env(env_id: str, training: bool) -> gym.Env:
    """The env an agent acts in: the Atari pipeline for ALE games, the plain env otherwise."""
    return make_atari(env_id, training) if is_atari(env_id) else make_env(env_id)


def env_fingerprint(env_id: str) -> str:
    """What a run's environment is, for the record: the env id and the versions that define it."""
    if is_atari(env_id):
        import ale_py

        return f"{env_id} (gymnasium {gym.__version__}, ale-py {ale_py.__version__}, ROM shipped with ale-py)"
    return f"{env_id} (gymnasium {gym.__version__})"


def missing_env(env_id: str) -> list[str]:
    """What a run in `env_id` needs that may be absent here (MuJoCo needs `mujoco`, Atari `ale-py`)."""
    try:
        make_agent_env(env_id, training=False).close()
    except Exception as e:  # noqa: BLE001 - reported to the user as a missing requirement
        return [f"environment {env_id!r}: {e} (install the project with `pip install -e .`, which brings "
                "gymnasium[mujoco] and ale-py)"]
    return []


def env_data_fingerprint(cfg) -> str:
    """The `data_fingerprint` hook of a paper whose config names an environment (`cfg.env_id`)."""
    return env_fingerprint(cfg.env_id)


def env_required_data(cfg) -> list[str]:
    """The `required_data` hook of a paper whose config names an environment (`cfg.env_id`)."""
    return missing_env(cfg.env_id)
