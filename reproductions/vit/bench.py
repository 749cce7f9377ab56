"""ViT benchmarks: images per second of our ViT against timm's VisionTransformer of the same shape
(same weights' shapes, same batch, same process, interleaved repeats, the median of each),
for a training step (forward, backward, AdamW) and for inference."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from reproductions.common.bench_timing import median_seconds, step_and_inference_timers
from reproductions.vit.model import ViT

# (name, image size, patch, channels, classes, dim, depth, heads, mlp, batch)
SHAPES = [
    ("mini shapes ViT (32px, patch 8, D=64, 4 blocks)", 32, 8, 3, 6, 64, 4, 4, 128, 128),
    ("ViT-Ti/16 (224px, D=192, 12 blocks)", 224, 16, 3, 1000, 192, 12, 3, 768, 8),
]
REPEATS = 5


class TimmViT(nn.Module):
    """timm's ViT fed the same [-1, 1] pixels our model makes from [0, 1] images."""

    def __init__(self, size, patch, channels, classes, dim, depth, heads, mlp):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.net = VisionTransformer(img_size=size, patch_size=patch, in_chans=channels, num_classes=classes,
                                     embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp / dim, qkv_bias=True,
                                     global_pool="token")

    def forward(self, x):
        return self.net(x * 2.0 - 1.0)


def _timers(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    return step_and_inference_timers(model, lambda: F.cross_entropy(model(x), y), lambda: model(x))


def run() -> list[dict]:
    rows = []
    for name, size, patch, c, k, dim, depth, heads, mlp, batch in SHAPES:
        torch.manual_seed(0)
        ours = ViT(size, patch, c, k, dim, depth, heads, mlp)
        timm = TimmViT(size, patch, c, k, dim, depth, heads, mlp)
        assert ours.num_parameters() == sum(p.numel() for p in timm.parameters())
        x, y = torch.rand(batch, c, size, size), torch.randint(0, k, (batch,))
        timers = {"ours": _timers(ours, x, y), "timm": _timers(timm, x, y)}
        seconds = median_seconds(timers, REPEATS)
        for i, what in enumerate(("train step", "inference")):
            ours_ips = batch / seconds[("ours", i)]
            base_ips = batch / seconds[("timm", i)]
            rows.append({"benchmark": f"{what}, {name}, batch {batch}", "ours": ours_ips, "baseline": base_ips,
                         "unit": "images/s (vs timm ViT)", "ratio": ours_ips / base_ips})
    return rows
