"""Environment steps per second of an RL training loop, ours against a baseline arm, both timed
in the same process on the same config (for `make bench`)."""

from __future__ import annotations

import random
import time
from typing import Any, Callable

import numpy as np
import torch


class QuietRun:
    """The `run` services a paper's `train` expects, doing nothing: only the loop is timed."""

    def __init__(self, seed: int = 1, device: str = "cpu"):
        self.seed, self.device = seed, torch.device(device)

    def progress(self, total: int, unit: str = "step") -> "QuietRun":
        return self

    def advance(self, n: int = 1, **postfix: float) -> None:
        pass

    def log(self, step: int, **values: float) -> None:
        pass

    def maybe_checkpoint(self, step: int, state: Callable[[], dict[str, Any]]) -> None:
        pass

    def resume_state(self) -> None:
        return None


def steps_per_second(train: Callable, cfg, env_steps: int, seed: int = 1) -> float:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    train(cfg, QuietRun(seed))
    return env_steps / (time.perf_counter() - t0)


def compare(benchmark: str, ours: Callable, baseline: Callable, cfg, env_steps: int) -> dict:
    """One row: ours and the baseline on the same config and seed, env steps per second."""
    a = steps_per_second(ours, cfg, env_steps)
    b = steps_per_second(baseline, cfg, env_steps)
    return {"benchmark": benchmark, "ours": a, "baseline": b, "unit": "env steps/s", "ratio": a / b}
