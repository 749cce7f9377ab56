"""Environment steps per second of an RL training loop, ours against a baseline arm, both timed
in the same process on the same config (for `make bench`)."""

from __future__ import annotations

import random
import time
from typing import Callable

import numpy as np
import torch

from evals.contract import QuietRun


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
