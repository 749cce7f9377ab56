"""SAC benchmarks: environment steps per second of ours vs Stable-Baselines3's SAC (same
hyper-parameters, same budget, same process)."""

from __future__ import annotations

import dataclasses

from reproductions.common.rl_bench import compare
from reproductions.sac import sac, sb3_baseline

BUDGET = sac.Config(total_steps=1_500, learning_starts=500)  # 1,000 steps with a gradient update each


def run() -> list[dict]:
    return [compare(f"SAC train, {env_id}", sac.train, sb3_baseline.train, dataclasses.replace(BUDGET, env_id=env_id),
                    BUDGET.total_steps)
            for env_id in ("Pendulum-v1", "HalfCheetah-v5")]
