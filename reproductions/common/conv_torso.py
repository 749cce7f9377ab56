"""DQN's convolutional network before its output layer (arXiv 1312.5602, Section 4.1), shared by
the RL papers that act on Atari frames (DQN, PPO, and Stable-Baselines3's DQN as a baseline arm)."""

from __future__ import annotations

import torch
import torch.nn as nn

from evals.tasks.atari import FRAME_STACK


class ConvTorso(nn.Module):
    """The paper's network before its output layer (Section 4.1): 16 8x8 filters with stride 4,
    32 4x4 filters with stride 2, a fully connected layer of 256 units, all rectified.
    Takes uint8 frames (N, 4, 84, 84) and scales them to [0, 1]."""

    out_features = 256

    def __init__(self, in_channels: int = FRAME_STACK):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=4, stride=2), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 9 * 9, self.out_features), nn.ReLU(),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames.float() / 255.0)
