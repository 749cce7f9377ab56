"""The `random` arm: a uniformly random policy, the baseline the paper's Table 1 lists as "Random".

It trains nothing. It acts in the env the config names with actions drawn uniformly by a generator
seeded by the run's seed, and is scored by the same evaluator as the learning arms. Its one saved
tensor is that seed, so each seed's checkpoint is its own.
"""

from __future__ import annotations

import numpy as np
import torch

from evals.contract import SafetensorsModule
from reproductions.dqn.dqn import Config, data_fingerprint, env_spaces, required_data  # noqa: F401  (the contract's hooks)


class RandomPolicy(SafetensorsModule):
    def __init__(self, n_actions: int, seed: int = 0):
        super().__init__()
        self.n_actions = n_actions
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self._rng: np.random.Generator | None = None

    def act(self, obs: np.ndarray, deterministic: bool = True) -> int:
        """A uniformly random action, whatever the observation (`deterministic` changes nothing)."""
        if self._rng is None:  # drawn from the (loaded) seed on first use
            self._rng = np.random.default_rng(int(self.seed))
        return int(self._rng.integers(self.n_actions))

    def load(self, path) -> "RandomPolicy":
        super().load(path)
        self._rng = None
        return self

    def num_parameters(self) -> int:
        return 0


def build(cfg: Config, seed: int = 0) -> RandomPolicy:
    return RandomPolicy(env_spaces(cfg.env_id)[1], seed)


def train(cfg: Config, run) -> RandomPolicy:
    run.progress(1)
    run.advance()
    return build(cfg, seed=run.seed)
