"""Edge maps of images (OpenCV's Canny), the condition of ControlNet's edge-conditioned model, and
the F-score of one edge map against another with a tolerance of `tolerance` pixels (an edge pixel
counts as matched when the other map has an edge pixel within that Chebyshev distance): precision
over the predicted map, recall over the reference map, F1 their harmonic mean."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def canny_edges(images: torch.Tensor, low: int = 100, high: int = 200) -> torch.Tensor:
    """OpenCV's Canny on each image (float N x C x H x W in [0, 1], or uint8; grey by the channels'
    mean): float N x 1 x H x W in {0, 1}."""
    import cv2

    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    grey = (x.mean(1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return torch.from_numpy(np.stack([cv2.Canny(g, low, high) > 0 for g in grey])).float()[:, None]


def _dilate(edges: torch.Tensor, tolerance: int) -> torch.Tensor:
    return F.max_pool2d(edges, 2 * tolerance + 1, stride=1, padding=tolerance) if tolerance else edges


def edge_f1(predicted: torch.Tensor, reference: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """Per image F1 of `predicted` edges against `reference` edges (both N x 1 x H x W in {0, 1}).
    An image with no edge in either map scores 1; with edges in one map only, 0."""
    p, r = predicted.float(), reference.float()
    tp_p = (p * _dilate(r, tolerance)).flatten(1).sum(1)
    tp_r = (r * _dilate(p, tolerance)).flatten(1).sum(1)
    n_p, n_r = p.flatten(1).sum(1), r.flatten(1).sum(1)
    precision = torch.where(n_p > 0, tp_p / n_p.clamp(min=1), torch.zeros_like(n_p))
    recall = torch.where(n_r > 0, tp_r / n_r.clamp(min=1), torch.zeros_like(n_r))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), torch.zeros_like(n_p))
    return torch.where((n_p == 0) & (n_r == 0), torch.ones_like(f1), f1)
