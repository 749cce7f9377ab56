"""The dry run's stand-ins for the full tier (imported by `repro reproduce --dry-run` alone, never by
a run): a tiny ImageNet-layout tree (evals/tasks/stand_ins.py) and a tiny CLIP the project builds,
its open_clip-layout weights in safetensors, with a JSON config of open_clip's form."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from evals.tasks.stand_ins import write_imagenet
from reproductions.clip.pretrained import Config, PretrainedCLIP, required_data

TINY_ARCH = {"embed_dim": 16, "quick_gelu": True,
             "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def write_tiny_clip(folder: Path, image_size: int = 224) -> tuple[Path, Path]:
    """A randomly initialised tiny CLIP: (its JSON config, its weights), written under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    arch = json.loads(json.dumps(TINY_ARCH))
    arch["vision_cfg"]["image_size"] = image_size
    config_path = folder / "tiny-clip.json"
    config_path.write_text(json.dumps(arch))
    weights = folder / "open_clip_model.safetensors"
    PretrainedCLIP(Config(model=str(config_path))).save(weights)
    return config_path, weights


def stand_in_data(cfg: Config, folder: Path) -> Config:
    changes = {}
    if any(m.startswith("CLIP weights") for m in required_data(cfg)):
        config_path, weights = write_tiny_clip(folder / "clip", cfg.image_size)
        changes.update(model=str(config_path), checkpoint=str(weights))
    if any(m.startswith("ImageNet") for m in required_data(cfg)):
        changes["data_root"] = str(write_imagenet(folder / "imagenet"))
    return dataclasses.replace(cfg, **changes)
