"""Moving shapes: generated videos of crossing, occluding shapes with exact masks (SAM 2's tiers).

Each video is `frames` frames (default 8) of `size` x `size` pixels (default 32) on a flat dark
background of a random grey. Two or three shapes (circle, square, triangle, cross) move in
straight lines at 1.5-3 pixels a frame:

- the *target* (object 1), the one to segment, drawn first (lowest);
- an *occluder* (object 2), drawn over the target, whose path is forced to cross the target's at
  frame `t_cross` (2 to 4), so the target is hidden in part or in full around that frame and
  re-appears after it;
- with probability 1/2 a *distractor* (object 3), drawn on top or between, which has the target's
  colour half the time (repeated colours: colour alone does not tell the target).

The target's mask on each frame is its visible pixels (modal, as DAVIS and SA-V annotate); it is
empty while the target is fully hidden. `visible[t]` is the target's visible area over its whole
area on frame t. The target is at least half visible on frame 0, where a video's prompt goes.

Clicks follow the interactive-segmentation convention of SAM's and SAM 2's evaluations: a click
goes at the pixel of a region farthest from the region's boundary (`interior_point`). The first
click is on the target's frame-0 mask; a corrective click goes on the error region of a frame
(positive on missed target pixels, negative on false positives).

Videos come from per-video numpy Generators seeded by (split, index), so video i is the same
whatever n; the `train` and `test` splits are disjoint streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from evals.tasks.images import COLOURS as ALL_COLOURS
from evals.tasks.images import _shape_masks, dataset_fingerprint

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow", "magenta")
SPLIT_SEEDS = {"train": 0, "test": 1}
FRAMES, SIZE = 8, 32
OCCLUDED = 0.5  # a frame is an occlusion when less than this share of the target shows


@dataclass
class Videos:
    frames: torch.Tensor   # N x T x 3 x H x W float32 in [0, 1]
    masks: torch.Tensor    # N x T x H x W bool: the target's visible pixels
    objects: torch.Tensor  # N x T x H x W uint8: the object drawn at each pixel (0: background, 1: target)
    visible: torch.Tensor  # N x T float32: the target's visible share of its area

    def __len__(self) -> int:
        return len(self.frames)

    def fingerprint(self) -> str:
        return dataset_fingerprint(self.frames)


def _path(rng: np.random.Generator, frames: int, size: int, radius: float, through=None, at: int = 0):
    """Centres (T x 2, row and column) of a straight path at 1.5-3 pixels a frame that stays inside
    the frame, through the point `through` at frame `at` if given; None if none found."""
    lo, hi = radius, size - radius
    for _ in range(100):
        speed, angle = rng.uniform(1.5, 3.0), rng.uniform(0, 2 * np.pi)
        v = speed * np.array([np.sin(angle), np.cos(angle)])
        p = rng.uniform(lo, hi, 2) if through is None else np.asarray(through, dtype=float)
        centres = p + v * (np.arange(frames)[:, None] - at)
        if (centres >= lo).all() and (centres <= hi).all():
            return centres
    return None


def _draw_video(rng: np.random.Generator, frames: int, size: int):
    while True:
        n = 3 if rng.random() < 0.5 else 2
        shapes = rng.integers(0, len(SHAPES), n)
        radii = np.array([rng.uniform(3.5, 5.0), rng.uniform(4.5, 6.5), rng.uniform(3.5, 5.5)])[:n]
        colours = rng.permutation(len(COLOURS))[:n]
        if n == 3 and rng.random() < 0.5:
            colours[2] = colours[0]  # a distractor of the target's colour
        t_cross = int(rng.integers(2, min(5, frames - 1)))
        target = _path(rng, frames, size, radii[0])
        if target is None:
            continue
        cross = target[t_cross] + rng.uniform(-1.0, 1.0, 2)
        occluder = _path(rng, frames, size, radii[1], through=cross, at=t_cross)
        paths = [target, occluder] + ([_path(rng, frames, size, radii[2])] if n == 3 else [])
        if any(p is None for p in paths):
            continue
        order = [0, 1, 2] if n == 3 and rng.random() < 0.5 else [0, 2, 1] if n == 3 else [0, 1]
        background = rng.uniform(0.0, 0.25)
        img = np.full((frames, 3, size, size), background, dtype=np.float32)
        obj = np.zeros((frames, size, size), dtype=np.uint8)
        yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
        for k in order:  # back to front: each object paints over those drawn before it
            dy = torch.from_numpy((yy[None] - paths[k][:, 0, None, None]) / radii[k])
            dx = torch.from_numpy((xx[None] - paths[k][:, 1, None, None]) / radii[k])
            m = _shape_masks(SHAPES[shapes[k]], dx, dy).numpy()  # T x H x W
            colour = np.asarray(ALL_COLOURS[COLOURS[colours[k]]], dtype=np.float32)
            img = np.where(m[:, None], colour[None, :, None, None], img)
            obj[m] = k + 1
            if k == 0:
                full = m.sum((1, 2)).astype(np.float32)
        masks = obj == 1
        visible = masks.sum((1, 2)) / np.maximum(full, 1)
        if visible[0] >= OCCLUDED and full.min() > 0:
            return img, masks, obj, visible.astype(np.float32)


def make_videos(n: int, split: str = "train", frames: int = FRAMES, size: int = SIZE, start: int = 0) -> Videos:
    """Videos start..start+n-1 of the split (video i drawn from a Generator seeded by (split, i))."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"make_videos: split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    if frames < 3 or size < 16:
        raise ValueError(f"make_videos: needs frames >= 3 and size >= 16, got {frames} and {size}")
    drawn = [_draw_video(np.random.default_rng([SPLIT_SEEDS[split], i, frames, size]), frames, size) for i in range(start, start + n)]
    return Videos(frames=torch.from_numpy(np.stack([d[0] for d in drawn])),
                  masks=torch.from_numpy(np.stack([d[1] for d in drawn])),
                  objects=torch.from_numpy(np.stack([d[2] for d in drawn])),
                  visible=torch.from_numpy(np.stack([d[3] for d in drawn])))


def post_occlusion(visible: np.ndarray | torch.Tensor) -> list[int]:
    """The frames after the first occlusion (a frame showing less than half the target), up to the
    end: where the target must be found again. Empty if the target is never occluded."""
    vis = np.asarray(visible)
    hidden = np.flatnonzero(vis < OCCLUDED)
    return list(range(int(hidden[0]) + 1, len(vis))) if len(hidden) else []


def interior_point(region: np.ndarray | torch.Tensor) -> tuple[int, int] | None:
    """The pixel (row, column) of a boolean region farthest from its boundary (the image's edge
    counts as boundary), the first in row-major order among ties; None for an empty region."""
    region = np.asarray(region, dtype=bool)
    if not region.any():
        return None
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(r), int(c)


def first_click(mask0) -> tuple[int, int, int]:
    """The evaluation's first click: positive, inside the target's frame-0 mask."""
    r, c = interior_point(mask0)
    return r, c, 1


def corrective_click(pred, gt) -> tuple[int, int, int] | None:
    """A corrective click on a frame: positive at the interior of the missed target pixels when they
    outnumber the false positives, else negative at the interior of the false positives; None when
    the prediction is exact."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    missed, extra = gt & ~pred, pred & ~gt
    if not missed.any() and not extra.any():
        return None
    if missed.sum() >= extra.sum():
        return (*interior_point(missed), 1)
    return (*interior_point(extra), 0)
