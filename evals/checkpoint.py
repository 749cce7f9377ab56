"""Safetensors checkpoints of nested training state; nothing is ever unpickled.

A state is a nested structure of dicts, lists, tuples, tensors and JSON scalars (a model's and an
optimizer's `state_dict()`, RNG states, a replay buffer, counters). Tensors go into the
safetensors file under their path; the skeleton around them, with dict keys' types kept (an
optimizer's state is keyed by int), goes into the file's metadata as JSON.

A contributor's checkpoint is read as bytes first (`safetensors_problem`: a pickle, a zip, a
header that does not fit the file) and only then loaded into its paper's model (`load_agent`).
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
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


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


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a safetensors file (None when it is), read as bytes: nothing is loaded."""
    if path.suffix != ".safetensors":
        return (f"{path.name}: only .safetensors checkpoints are loaded, not {path.suffix or 'a file without suffix'} "
                "(pickle-based formats run code when loaded)")
    with open(path, "rb") as f:
        head = f.read(8)
        if head[:1] == b"\x80":
            return f"{path.name} is a Python pickle (protocol {head[1] if len(head) > 1 else '?'}): never unpickled"
        if head[:2] == b"PK":
            return f"{path.name} is a zip archive (torch.save's format, a pickle inside): never loaded"
        size = path.stat().st_size
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(MAX_HEADER, size - 8):
            return f"{path.name} is not safetensors: its first 8 bytes give no header length that fits the file"
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return f"{path.name} is not safetensors: its header is not JSON"
        except RecursionError:
            return f"{path.name} is not safetensors: its header is nested too deeply"
    if not isinstance(header, dict):
        return f"{path.name} is not safetensors: its header is not a JSON object"
    end = size - 8 - n
    for name, t in header.items():
        if name == "__metadata__":
            continue
        offsets = t.get("data_offsets") if isinstance(t, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= end):
            return f"{path.name} is not safetensors: tensor {name!r} lies outside the file"
    return None


def load_agent(module, config, path: Path, what: str):
    """`module.build(config)` with the weights of `path` (`repro evaluate`, verify's
    re-evaluation); a file that is not safetensors, or does not fit the model (`what` names it),
    is one CheckpointError naming the file."""
    problem = safetensors_problem(path)
    if problem:
        raise CheckpointError(problem)
    try:
        return module.build(config).load(path)
    except Exception as e:  # noqa: BLE001 - whatever the paper's load raises, the file is what is wrong
        raise CheckpointError(f"{path}: does not load into {what}: {type(e).__name__}: "
                              f"{' '.join(str(e).split())[:300]}") from e
