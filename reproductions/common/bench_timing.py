"""Timing a model against a baseline in the same process (for `make bench`): a training step and an
inference pass of each, interleaved round by round so that the machine's load falls on both alike,
the first round a warm-up, the median of the rest. ViT's and CLIP's benchmarks use it."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn as nn

Timer = Callable[[], float]  # runs once, returns its seconds


def step_and_inference_timers(model: nn.Module, loss: Callable[[], torch.Tensor],
                              infer: Callable[[], object]) -> tuple[Timer, Timer]:
    """Two timers of `model`: one AdamW step (`loss()` forward, backward, optimiser step) and one
    `infer()` without gradients in eval mode (the mode switch untimed)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> float:
        start = time.perf_counter()
        value = loss()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        return time.perf_counter() - start

    @torch.no_grad()
    def inference() -> float:
        model.eval()
        start = time.perf_counter()
        infer()
        seconds = time.perf_counter() - start
        model.train()
        return seconds

    return train_step, inference


def median_seconds(timers: dict[str, tuple[Timer, ...]], repeats: int) -> dict[tuple[str, int], float]:
    """`repeats` + 1 rounds, each running every contender's timers in turn; the first round warms up
    and is dropped. The median seconds of (contender, timer index)."""
    times: dict[tuple[str, int], list[float]] = {(who, i): [] for who, fns in timers.items() for i in range(len(fns))}
    for r in range(repeats + 1):
        for who, fns in timers.items():
            for i, fn in enumerate(fns):
                dt = fn()
                if r:
                    times[(who, i)].append(dt)
    return {key: statistics.median(ts) for key, ts in times.items()}
