"""The dry run's stand-in for the full tier (imported by `repro reproduce --dry-run` alone, never by
a run): a tiny DAVIS-format root of moving-shapes videos (evals/tasks/davis.py's `write_davis`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from evals.tasks.davis import write_davis
from reproductions.sam2.sam2 import Config, required_data


def stand_in_data(cfg: Config, folder: Path) -> Config:
    if not required_data(cfg):
        return cfg
    return dataclasses.replace(cfg, data_root=str(write_davis(folder / "davis", frames=max(4, min(cfg.frames, 8)))))
