"""The published Mixtral checkpoint, for the full tier: nothing is trained; the weights are read
from a local Hugging Face folder and evaluated with lm-eval's standard tasks (the `lm_eval`
evaluator loads them through lm-eval's own `hf` model)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file


@dataclass
class Config:
    checkpoint_path: str = "checkpoints/Mixtral-8x7B-v0.1"   # a local copy of mistralai/Mixtral-8x7B-v0.1
    dtype: str = "bfloat16"


class PublishedCheckpoint:
    """A reference to the checkpoint; its parameter count comes from its safetensors index."""

    def __init__(self, cfg: Config):
        self.checkpoint_path, self.dtype = cfg.checkpoint_path, cfg.dtype

    def num_parameters(self) -> int:
        index = Path(self.checkpoint_path) / "model.safetensors.index.json"
        if not index.is_file():
            return 0
        total_bytes = json.loads(index.read_text())["metadata"]["total_size"]
        return int(total_bytes) // 2  # 16-bit weights

    def save(self, path) -> None:
        """No weights of our own: an empty safetensors file naming the checkpoint it evaluated."""
        save_file({}, str(path), metadata={"checkpoint_path": self.checkpoint_path, "fingerprint": _fingerprint(self.checkpoint_path)})

    def load(self, path) -> "PublishedCheckpoint":
        return self


def _fingerprint(path: str) -> str:
    config = Path(path) / "config.json"
    return hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.is_file() else "missing"


def build(cfg: Config) -> PublishedCheckpoint:
    return PublishedCheckpoint(cfg)


def train(cfg: Config, run) -> PublishedCheckpoint:
    return build(cfg)


def data_fingerprint(cfg: Config) -> str:
    return f"checkpoint {cfg.checkpoint_path} config sha256:{_fingerprint(cfg.checkpoint_path)}"


def required_data(cfg: Config) -> list[str]:
    if not (Path(cfg.checkpoint_path) / "config.json").is_file():
        return [f"the published Mixtral-8x7B checkpoint (Hugging Face format: config.json, safetensors shards, "
                f"tokenizer) at checkpoint_path={cfg.checkpoint_path!r}, and the standard tasks' datasets in the "
                "local Hugging Face cache"]
    return []
