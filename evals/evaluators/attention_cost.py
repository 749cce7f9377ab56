"""Attention cost against sequence length: how peak extra memory grows, and throughput against
the baselines timed in the same process.

Reads an agent's measurements (`agent.memory[method][N]` in bytes, `agent.speed[method][N]` in
tokens per second, forward + backward) and reports: the growth exponent of memory in N per
method (least-squares slope of log memory on log N: 2 is quadratic, 1 linear), memory at the
largest N and the naive/tiled ratio there, tokens/s per method at the largest timed N and the
tiled method's speed relative to each baseline, and the agent's largest error against naive
attention. The protocol says how the agent measured.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from evals.evaluators import register
from evals.record import EvalResult

VERSION = 1


class AttentionCostOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ours: str = "tiled"


def growth_exponent(row: dict[int, float]) -> float:
    ns = sorted(row)
    return float(np.polyfit(np.log(ns), np.log([row[n] for n in ns]), 1)[0])


@register("attention_cost", version=VERSION, options=AttentionCostOptions)
def attention_cost(agent, config, options: AttentionCostOptions) -> EvalResult:
    metrics, samples = {}, {}
    for method, row in agent.memory.items():
        metrics[f"memory_exponent_{method}"] = growth_exponent(row)
        samples[f"memory_mib_{method}"] = [row[n] / 2**20 for n in sorted(row)]
    n_mem = max(agent.memory[options.ours])
    metrics["memory_mib_at_max_n_" + options.ours] = agent.memory[options.ours][n_mem] / 2**20
    for method, row in agent.memory.items():
        if method != options.ours and n_mem in row:
            metrics[f"memory_ratio_{method}_to_{options.ours}"] = row[n_mem] / agent.memory[options.ours][n_mem]
    n_speed = max(agent.speed[options.ours])
    for method, row in agent.speed.items():
        metrics[f"tokens_per_s_{method}"] = row[n_speed]
        samples[f"tokens_per_s_{method}"] = [row[n] for n in sorted(row)]
        if method != options.ours:
            metrics[f"speed_ratio_{options.ours}_to_{method}"] = agent.speed[options.ours][n_speed] / row[n_speed]
    metrics["max_abs_error"] = agent.max_abs_error
    return EvalResult(
        evaluator="attention_cost", version=VERSION, metrics=metrics, samples=samples,
        protocol={"memory_lengths": sorted(agent.memory[options.ours]), "speed_lengths": sorted(agent.speed[options.ours]),
                  "speed_reported_at": n_speed, "memory_reported_at": n_mem,
                  "measurement": getattr(agent, "measurement", "not stated by the agent")},
    )
