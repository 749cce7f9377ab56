"""Label-preserving data augmentation for the mini tier's shapes arms, the same for ViT and ResNet.

The paper trains its small-data models with regularisation tuned per model (dropout, weight decay;
Appendix B.1, D.4) and its ResNets with the standard crop-and-flip; training both arms of a
comparison without any augmentation favours whichever memorises faster. Here both arms see
exactly the same augmented batches: the randomness is a pure function of (run seed, step), drawn
from a generator of its own (not torch's global one, which model initialisation and dropout also
use), so a ViT arm and a ResNet arm of one seed train on identical images, and a run re-executes
bit for bit, resumed or not.

Two transforms, both of which keep a `make_shapes` image a valid image of its class:

- horizontal flip, with probability 1/2: every shape class is mirror-symmetric about the vertical
  axis (the triangle points up), and pixels are sampled at their centres, so the flipped image is
  exactly the image `make_shapes` draws with the centre at 1 - cx. A vertical flip would turn the
  triangle upside down, which no test image shows; it is not used.
- translation by up to `shift` pixels each way, as a circular shift restricted to the offsets that
  keep the whole shape (its pixel mask) inside the image: only background pixels wrap around, and
  the backgrounds are a constant or i.i.d. noise, so the result is again a shapes image, with
  the shape moved. A plain pad-and-crop would cut off part of a shape near the border (half a
  cross is not a cross).

Digits get no augmentation: a flip changes a digit, and the 8x8 digits fill their frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset, TensorDataset

from evals.tasks.image_loaders import SHAPES_DEFAULT_N, SHAPES_SEEDS
from evals.tasks.images import make_shapes
from reproductions.vit import classify

STREAM = 0xA06  # keys the augmentation's generator apart from every other stream of a run


@dataclass
class AugmentConfig:
    """Mixed into an arm's Config (after its TrainConfig); the defaults change nothing."""

    shift: Annotated[int, Field(ge=0)] = 0    # shapes: translate by up to this many pixels each way
    flip: bool = False                        # shapes: horizontal flip with probability 1/2


class AugmentedShapes(Dataset):
    """The shapes training set, augmented per batch. `__getitems__` serves one batch (the loader
    passes it the batch's indices) and counts the batches, so batch k of the run (from
    `start_step` on) is augmented by a generator seeded with (seed, start_step + k)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, shift: int, flip: bool,
                 seed: int, start_step: int = 0):
        if not (len(images) == len(labels) == len(masks)):
            raise ValueError("images, labels and masks must have the same length")
        self.images, self.labels, self.shift, self.flip, self.seed = images, labels, shift, flip, seed
        self.step = start_step
        h, w = masks.shape[-2:]
        rows, cols = masks.any(2), masks.any(1)  # N x H, N x W: which rows / columns the shape touches
        first = lambda m: m.int().argmax(1)  # noqa: E731
        last = lambda m: m.shape[1] - 1 - m.flip(1).int().argmax(1)  # noqa: E731
        # the offsets that keep the shape inside: -top .. (h - 1 - bottom), likewise for columns
        self.room = torch.stack([first(rows), h - 1 - last(rows), first(cols), w - 1 - last(cols)], 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def augment(self, idx: torch.Tensor, step: int) -> torch.Tensor:
        """The images `idx` as batch `step` sees them."""
        rng = np.random.default_rng([STREAM, self.seed, step])
        x = self.images[idx]
        n, _, h, w = x.shape
        u = torch.from_numpy(rng.random((n, 3)))
        if self.flip:
            x = torch.where((u[:, 0] < 0.5)[:, None, None, None], x.flip(-1), x)
        if self.shift > 0:
            room = self.room[idx]
            # a horizontal flip swaps the room on the left and on the right
            left = torch.where(u[:, 0] < 0.5, room[:, 3], room[:, 2]) if self.flip else room[:, 2]
            right = torch.where(u[:, 0] < 0.5, room[:, 2], room[:, 3]) if self.flip else room[:, 3]
            lo_y, hi_y = torch.clamp(-room[:, 0], min=-self.shift), torch.clamp(room[:, 1], max=self.shift)
            lo_x, hi_x = torch.clamp(-left, min=-self.shift), torch.clamp(right, max=self.shift)
            # uniform over the allowed integer offsets
            dy = lo_y + (u[:, 1] * (hi_y - lo_y + 1)).long().clamp(max=hi_y - lo_y)
            dx = lo_x + (u[:, 2] * (hi_x - lo_x + 1)).long().clamp(max=hi_x - lo_x)
            r = (torch.arange(h)[None, :] - dy[:, None]) % h  # output row i reads input row i - dy
            c = (torch.arange(w)[None, :] - dx[:, None]) % w
            src = (r[:, :, None] * w + c[:, None, :]).view(n, 1, h * w).expand(n, x.shape[1], h * w)
            x = x.flatten(2).gather(2, src).view(x.shape)
        return x

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.augment(idx, self.step)
        self.step += 1
        return list(zip(x, self.labels[idx]))


def resume_step(run) -> int:
    """The step a resumed run goes on from (`classify.fit`'s checkpoint), 0 for a fresh run."""
    state = run.resume_state()
    return 0 if state is None else int(state["parts"]["counters"]["step"])


def training_set(cfg, run) -> Dataset:
    """`classify.training_set(cfg)`, augmented as `cfg` says (shapes only; else unchanged)."""
    ds = classify.training_set(cfg)
    if not (cfg.shift or cfg.flip):
        return ds
    if cfg.dataset != "shapes" or not isinstance(ds, TensorDataset):
        raise ValueError(f"config fields 'shift' and 'flip': augmentation is defined for shapes only, not {cfg.dataset!r}")
    images, labels = ds.tensors
    batch = make_shapes(cfg.n_train or SHAPES_DEFAULT_N["train"], size=cfg.image_size, seed=SHAPES_SEEDS["train"])
    if not (torch.equal(batch.images, images) and torch.equal(batch.labels, labels)):
        raise RuntimeError("the shapes training set and the masks drawn for it differ")
    return AugmentedShapes(images, labels, batch.masks, cfg.shift, cfg.flip, run.seed, resume_step(run))
