"""The ResNet arms: the convolutional baseline the paper compares ViT with (Section 4.1 uses
ResNet-v2, "BiT"), trained with the same loop, data, budget and seeds as the ViT arms.

A small pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks"):
a 3x3 stem, `stages` stages of `blocks` basic blocks (BN-ReLU-conv twice, identity shortcut or a
1x1 projection when the shape changes), the width doubling and the resolution halving at each
stage after the first, then global average pooling and a linear head. BatchNorm stands in for
BiT's GroupNorm with weight standardisation (a deviation the spec records). The config's `shift`
and `flip` augment the shapes exactly as the ViT arms of `vit_augmented.py` do (`augment.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.contract import SafetensorsModule
from reproductions.vit import augment, classify
from reproductions.vit.augment import AugmentConfig
from reproductions.vit.classify import TrainConfig, channels, num_classes


@dataclass
class Config(TrainConfig, AugmentConfig):
    width: int = 64       # channels of the first stage
    stages: int = 4
    blocks: int = 2       # basic blocks per stage


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        return skip + self.conv2(F.relu(self.bn2(out)))


class ResNet(SafetensorsModule):
    def __init__(self, in_channels: int, num_classes: int, width: int, stages: int, blocks: int):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        layers, c = [], width
        for s in range(stages):
            c_out = width * 2 ** s
            for b in range(blocks):
                layers.append(PreActBlock(c, c_out, 2 if s > 0 and b == 0 else 1))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.norm = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(images * 2.0 - 1.0))
        return self.head(F.relu(self.norm(x)).mean((2, 3)))

    @torch.no_grad()
    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return self(images.to(self.head.weight.device))
        finally:
            self.train(was_training)


def build(cfg: Config) -> ResNet:
    return ResNet(channels(cfg), num_classes(cfg), cfg.width, cfg.stages, cfg.blocks)


def train(cfg: Config, run) -> ResNet:
    model = build(cfg).to(run.device)
    run.progress(cfg.steps)
    return classify.fit(model, augment.training_set(cfg, run), cfg, run)


data_fingerprint = classify.data_fingerprint
required_data = classify.required_data
