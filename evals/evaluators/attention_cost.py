"""Attention cost against sequence length: how peak extra memory grows, and throughput against
the baselines timed in the same process.

Reads an agent's measurements (`agent.memory[method][N]` in bytes, `agent.speed[method][N]` in
tokens per second, forward + backward) and reports: the growth exponent of memory in N per
method (least-squares slope of log memory on log N: 2 is quadratic, 1 linear), memory at the
largest N and the naive/tiled ratio there, tokens/s per method at the largest timed N and the
tiled method's speed relative to each baseline, and the agent's largest error against naive
attention. The samples are the measurements at each N (`memory_mib_by_n_<method>`,
`tokens_per_s_by_n_<method>`, at the lengths the protocol lists per method), from which every metric but the
error recomputes. The protocol says how the agent measured.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from evals.contract import AttentionMeasurements, capability
from evals.evaluators import Measured, register
from evals.record import EvalResult


class AttentionCostOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ours: str = "tiled"


def growth_exponent(row: dict[int, float]) -> float:
    ns = sorted(row)
    return float(np.polyfit(np.log(ns), np.log([row[n] for n in ns]), 1)[0])


def summarise(memory: dict[str, dict[int, float]], speed: dict[str, dict[int, float]], ours: str) -> dict[str, float]:
    """The summary metrics from the measurements (memory in MiB, speed in tokens/s, per method and N)."""
    metrics = {f"memory_exponent_{method}": growth_exponent(row) for method, row in memory.items()}
    n_mem = max(memory[ours])
    metrics["memory_mib_at_max_n_" + ours] = memory[ours][n_mem]
    for method, row in memory.items():
        if method != ours and n_mem in row:
            metrics[f"memory_ratio_{method}_to_{ours}"] = row[n_mem] / memory[ours][n_mem]
    n_speed = max(speed[ours])
    for method, row in speed.items():
        metrics[f"tokens_per_s_{method}"] = row[n_speed]
        if method != ours:
            metrics[f"speed_ratio_{ours}_to_{method}"] = speed[ours][n_speed] / row[n_speed]
    return metrics


def _measurements(samples: dict[str, list[float]], kind: str, lengths: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    return {method: dict(zip(ns, samples[f"{kind}_by_n_{method}"], strict=True)) for method, ns in lengths.items()}


def derive(result: EvalResult) -> dict[str, float]:
    """Every metric but the agent's own error, recomputed from the samples (each method's measurements
    at the lengths the protocol lists for it)."""
    p = result.protocol
    return summarise(_measurements(result.samples, "memory_mib", p["memory_lengths"]),
                     _measurements(result.samples, "tokens_per_s", p["speed_lengths"]), p["ours"])


def metric_names(o: AttentionCostOptions) -> list[str]:
    return ["max_abs_error", "memory_exponent_*", f"memory_mib_at_max_n_{o.ours}", f"memory_ratio_*_to_{o.ours}",
            "tokens_per_s_*", f"speed_ratio_{o.ours}_to_*"]


# version 2: samples named <quantity>_by_n_<method>, apart from the metrics
@register("attention_cost", version=2, options=AttentionCostOptions, derive=derive, metric_names=metric_names)
def attention_cost(agent, config, options: AttentionCostOptions) -> Measured:
    agent = capability(agent, AttentionMeasurements, "attention_cost")
    memory = {method: {n: b / 2**20 for n, b in row.items()} for method, row in agent.memory.items()}
    metrics = summarise(memory, agent.speed, options.ours)
    samples = {f"memory_mib_by_n_{method}": [row[n] for n in sorted(row)] for method, row in memory.items()}
    samples |= {f"tokens_per_s_by_n_{method}": [row[n] for n in sorted(row)] for method, row in agent.speed.items()}
    metrics["max_abs_error"] = agent.max_abs_error
    return Measured(metrics=metrics, samples=samples,
        protocol={"ours": options.ours, "memory_lengths": {m: sorted(row) for m, row in memory.items()},
                  "speed_lengths": {m: sorted(row) for m, row in agent.speed.items()},
                  "memory_reported_at": max(memory[options.ours]), "speed_reported_at": max(agent.speed[options.ours]),
                  "measurement": agent.measurement},
    )
