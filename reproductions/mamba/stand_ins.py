"""Stand-ins for `repro reproduce mamba --tier full --dry-run` where the Pile's token files are
absent: random GPT-NeoX token ids in the same on-disk layout (`evals/tasks/token_files.py`), so the
real loader, the 130M model, one optimisation step and the evaluator all run. Not part of any run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from evals.tasks import token_files


def stand_in_data(config, folder: Path):
    """`config` with `data_root` at random token files under `folder` (train: 8 windows; validation:
    one window of the run's context and its target)."""
    if not token_files.missing(config.data_root):
        return config
    root = Path(folder) / "pile"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rng.integers(0, config.vocab_size, 8 * (config.context + 1), dtype=np.uint16).tofile(root / "train.bin")
    rng.integers(0, config.vocab_size, config.context + 1, dtype=np.uint16).tofile(root / "validation.bin")
    return dataclasses.replace(config, data_root=str(root))
