"""The `fixed_*` arms: SAC with a fixed temperature, the 2018 version the paper compares against
(Figure 1's 'SAC (fixed temperature)' curves, Haarnoja et al. 2018a, arXiv 1801.01290).

Everything is sac.py's (networks, soft Q target, policy loss, loop); the one difference is that
alpha never moves: the Learner's temperature optimiser is replaced by one with nothing to do
(SGD with learning rate 0 adds -0 * grad to log(alpha), which leaves it bit-identical), so the
soft Q target and the policy loss use alpha = `init_alpha` for the whole run.

The 2018 paper has no temperature: it scales the reward by a constant instead (its Table 2:
reward scale 5 on Hopper, Walker2d, HalfCheetah and Ant, 20 on Humanoid). Dividing the maximum
entropy objective r + alpha * H by alpha shows that a reward scale of s is the temperature
alpha = 1/s, so the default 0.2 is the 2018 paper's reward scale 5 (and the temperature SB3 and
Spinning Up use by default).

sac.train builds its Learner by name, with no parameter for another one, and sac.py may not be
edited (other papers' records hash it); `train` therefore runs sac.train with the module's name
`Learner` pointing at FixedTemperatureLearner for the duration of the call (restored after it,
also on an error), so the loop itself is exactly the learned-temperature arm's loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

import torch

from reproductions.sac import sac
from reproductions.sac.sac import SAC, build, data_fingerprint, required_data  # noqa: F401  (the contract's hooks)


@dataclass
class Config(sac.Config):
    """sac.Config; `init_alpha` is the fixed temperature (the 2018 paper's reward scale 5 -> alpha 0.2)."""

    init_alpha: float = 0.2


class FixedTemperatureLearner(sac.Learner):
    """sac.Learner whose temperature step does nothing: alpha stays at the agent's initial value."""

    def __init__(self, agent: SAC, cfg: sac.Config):
        super().__init__(agent, cfg)
        self.alpha_opt = torch.optim.SGD([agent.log_alpha], lr=0.0)


def train(cfg: Config, run) -> SAC:
    with mock.patch.object(sac, "Learner", FixedTemperatureLearner):
        return sac.train(cfg, run)


def dry_run_step(agent: SAC, cfg: Config) -> dict[str, float]:
    with mock.patch.object(sac, "Learner", FixedTemperatureLearner):
        return sac.dry_run_step(agent, cfg)
