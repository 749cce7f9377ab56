"""What a training loop saves to resume exactly, and puts back.

`parts` names the stateful pieces: modules, optimisers and replay buffers (`state_dict` /
`load_state_dict`) and random generators (`get_state` / `set_state`). Torch's global generator,
which samples the policy's actions, is always included; counters ride along as plain values.
"""

from __future__ import annotations

from typing import Any

import torch


def snapshot(parts: dict[str, Any], **counters: int) -> dict[str, Any]:
    state = {name: p.get_state() if isinstance(p, torch.Generator) else p.state_dict() for name, p in parts.items()}
    return {**state, "torch_rng": torch.get_rng_state(), "counters": counters}


def restore(state: dict[str, Any], parts: dict[str, Any]) -> dict[str, int]:
    """Load `state` into `parts`; return the counters."""
    for name, p in parts.items():
        (p.set_state if isinstance(p, torch.Generator) else p.load_state_dict)(state[name])
    torch.set_rng_state(state["torch_rng"])
    return {k: int(v) for k, v in state["counters"].items()}
