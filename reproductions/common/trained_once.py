"""Weights that several arms of a tier share (a pre-trained base), trained once per process.

`trained_once(key, seed, device, train, log)` calls `train(log)` in a random state of its own
(`torch.random.fork_rng`, seeded by `seed`), so the caller's random state is the same after it
whether the weights were trained or taken from the cache: an arm gives the same bits when it runs
alone (as `repro verify` re-executes it) and when an earlier arm of the same seed trained the
shared part in the same process. The curve `train` logged is kept and replayed on a cache hit, so
every arm's record carries it.
"""

from __future__ import annotations

from typing import Callable

import torch

Log = Callable[..., None]
_CACHE: dict[tuple, tuple[dict[str, torch.Tensor], list[tuple[int, dict[str, float]]]]] = {}


def trained_once(key: tuple, seed: int, device: torch.device, train: Callable[[Log], dict[str, torch.Tensor]],
                 log: Log) -> dict[str, torch.Tensor]:
    """`train(log)`'s state dict, cached by (key, seed, device); `log(step, **values)` sees the
    same curve on a miss (live) and on a hit (replayed)."""
    full_key = (key, seed, str(device))
    if full_key not in _CACHE:
        forked = [device.index or 0] if device.type == "cuda" else []
        curve: list[tuple[int, dict[str, float]]] = []

        def record(step: int, **values: float) -> None:
            curve.append((step, values))
            log(step, **values)

        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(seed)
            state = train(record)
        _CACHE[full_key] = ({k: v.detach().clone() for k, v in state.items()}, curve)
        return {k: v.clone() for k, v in state.items()}
    state, curve = _CACHE[full_key]
    for step, values in curve:
        log(step, **values)
    return {k: v.clone() for k, v in state.items()}
