"""The ViT arms of the mini tier's shapes comparison: `vit.py`'s model and training loop on the
augmented training set of `augment.py` (the same augmentation as the ResNet arms).

`train` is `vit.train` with the training set swapped for the augmented one; nothing else differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from reproductions.vit import augment, classify, vit
from reproductions.vit.augment import AugmentConfig
from reproductions.vit.model import ViT


@dataclass
class Config(vit.Config, AugmentConfig):
    pass


build = vit.build
dry_run_step = vit.dry_run_step
data_fingerprint = classify.data_fingerprint
required_data = classify.required_data


def train(cfg: Config, run) -> ViT:
    model = build(cfg).to(run.device)
    run.progress(cfg.steps)
    return classify.fit(model, augment.training_set(cfg, run), cfg, run)
