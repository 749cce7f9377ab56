"""Safetensors checkpoints of nested training state; nothing is ever unpickled.

A state is a nested structure of dicts, lists, tuples, tensors and JSON scalars (a model's and an
optimizer's `state_dict()`, RNG states, a replay buffer, counters). Tensors go into the
safetensors file under their path; the skeleton around them, with dict keys' types kept (an
optimizer's state is keyed by int), goes into the file's metadata as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

SKELETON_KEY = "repro.skeleton"


class CheckpointError(ValueError):
    """A checkpoint file is missing, not safetensors, or not the state the loader expects."""


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"T": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"N": path}
    if isinstance(obj, dict):
        return {"D": [[k, _encode(v, f"{path}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
        return {"L" if isinstance(obj, list) else "U": items}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"S": obj}
    if isinstance(obj, (np.integer, np.floating)):
        return {"S": obj.item()}
    raise CheckpointError(f"cannot checkpoint {type(obj).__name__} at '{path}'")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    (tag, val), = node.items()
    if tag == "T":
        return tensors[val]
    if tag == "N":
        return tensors[val].numpy()
    if tag == "D":
        return {k: _decode(v, tensors) for k, v in val}
    if tag in ("L", "U"):
        items = [_decode(v, tensors) for v in val]
        return items if tag == "L" else tuple(items)
    if tag == "S":
        return val
    raise CheckpointError(f"unknown skeleton tag {tag!r}")


def save_state(path: Path, state: dict[str, Any]) -> str:
    """Write `state` atomically; return the file's sha256."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, "s", tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={SKELETON_KEY: json.dumps(skeleton)})
    os.replace(tmp, path)
    return sha256_file(path)


def load_state(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: only .safetensors checkpoints are loaded (never pickles)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from None
    if SKELETON_KEY not in meta:
        # A plain safetensors file (e.g. exported weights): its flat tensor dict is the state.
        return dict(tensors)
    try:
        return _decode(json.loads(meta[SKELETON_KEY]), tensors)
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: metadata '{SKELETON_KEY}' is corrupt: {e}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
