"""A tiny stand-in of the FineWeb token shards for `repro reproduce muon --tier full --dry-run`
on a machine without them (evals/dry_run.py): one train and one validation shard of random GPT-2
token ids in modded-nanogpt's format, so the real loader, the model, one optimisation step and the
`fineweb_loss` evaluator all run. Nothing here is part of a run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from evals.tasks import fineweb

STAND_IN_TOKENS = 1 << 15


def stand_in_data(config, folder: Path):
    """`config` with `data_root` at stand-in shards written under `folder` (unchanged when the
    configured root has its shards)."""
    if not fineweb.missing(config.data_root):
        return config
    root = Path(folder) / "fineweb10B"
    root.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for name in ("fineweb_train_000001.bin", "fineweb_val_000000.bin"):
        fineweb.write_shard(root / name, torch.randint(fineweb.VOCAB_SIZE, (STAND_IN_TOKENS + 1,), generator=gen).numpy())
    return dataclasses.replace(config, data_root=str(root))
