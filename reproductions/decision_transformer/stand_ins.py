"""A tiny stand-in of the Minari datasets a full-tier run reads, for `--dry-run` on a machine without
them: a few short episodes of uniformly random actions in the config's environment, written in
Minari's format (arrow storage) under the dry run's folder, with reference scores in the metadata."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from evals.tasks.envs import episode_seed
from reproductions.decision_transformer import datasets as D


def stand_in_data(config, folder: Path):
    folder = Path(folder)
    act = D.uniform_policy(config.env_id, 0)
    for i, name in enumerate(config.dataset.split("+")):
        if not (D.dataset_path(folder, name) / "metadata.json").exists():
            episodes = D.rollouts(config.env_id, act, [episode_seed(i, j) for j in range(2)])
            D.write_minari(folder, name, config.env_id, episodes, ref_min=-20.0, ref_max=3000.0,
                           description=f"stand-in for {name}: random actions, for a dry run only")
    return dataclasses.replace(config, minari_root=str(folder))
