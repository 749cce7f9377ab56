"""Captioned shapes: generated image-text pairs with classes held out for zero-shot transfer (CLIP).

Each image holds one to three copies of one kind of object, a (colour, shape) pair, all of one
size, in distinct cells of a 3x3 grid on a dark background; its caption names the count, the
size, the colour and the shape, and for a single object its position:

    "one small red circle at the top left", "three large blue crosses"

The 25 (colour, shape) classes split into 15 seen and 10 held out: class (c, s) is held out when
(c - s) mod 5 is 0 or 1. Held-out classes never appear in a training image or caption, though
every colour word and every shape word does (each colour with three shapes, each shape with three
colours). Among the held-out classes each colour has two shapes and each shape two colours, so
neither attribute alone classifies them: colour alone or shape alone gives at most 50%, chance is
10%. The zero-shot split draws images of held-out classes only.

Text is tokenised by words over a fixed vocabulary (`VOCAB`): padding is id 0, the start token 1,
and the end token the largest id, so that a text encoder may read each text's features at the
arg-max of its ids (CLIP's [EOS] token, open_clip's `argmax` pooling).

The zero-shot prompts are built from `TEMPLATES`: the single prompt is `TEMPLATES[0]` (the
counterpart of the paper's "A photo of a {label}."), the ensemble is all of them (count, size and
position contexts, the counterpart of its 80 templates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from evals.tasks.images import COLOURS as ALL_COLOURS
from evals.tasks.images import _position_words, _shape_masks, dataset_fingerprint

COLOURS = ("red", "green", "blue", "yellow", "magenta")
SHAPES = ("circle", "square", "triangle", "cross", "ring")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses", "ring": "rings"}
SIZES = ("small", "large")
RADIUS = {"small": 0.11, "large": 0.16}  # a fraction of the side: a large shape fits its grid cell (1/3)
COUNTS = ("one", "two", "three")
TRAIN_SEED, ZERO_SHOT_SEED = 0, 10_000  # disjoint streams

CLASSES = tuple((c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES)))
HELD_OUT = tuple((c, s) for c, s in CLASSES if (c - s) % len(SHAPES) in (0, 1))
SEEN = tuple(k for k in CLASSES if k not in HELD_OUT)

TEMPLATES = ("one {c}", "one small {c}", "one large {c}", "two small {cs}", "two large {cs}", "three small {cs}",
             "three large {cs}", "one small {c} in the center", "one large {c} at the top left")

_POSITION_WORDS = ("in", "the", "at", "on", "top", "middle", "bottom", "left", "center", "right")
PAD, BOS = "<pad>", "<bos>"
EOT = "<eot>"
VOCAB = (PAD, BOS, *COUNTS, *SIZES, *COLOURS, *SHAPES, *PLURAL.values(), *_POSITION_WORDS, EOT)
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
CONTEXT_LENGTH = 10  # start + at most 8 words + end


def class_name(cls: tuple[int, int]) -> str:
    return f"{COLOURS[cls[0]]} {SHAPES[cls[1]]}"


def class_plural(cls: tuple[int, int]) -> str:
    return f"{COLOURS[cls[0]]} {PLURAL[SHAPES[cls[1]]]}"


def prompts(classes: tuple[tuple[int, int], ...], templates: tuple[str, ...]) -> list[list[str]]:
    """For each class, its prompt under each template."""
    return [[t.format(c=class_name(k), cs=class_plural(k)) for t in templates] for k in classes]


def tokenize(texts: list[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Word ids, len(texts) x context_length: <bos> words <eot>, then <pad> (id 0)."""
    out = torch.zeros(len(texts), context_length, dtype=torch.int64)
    for i, text in enumerate(texts):
        words = text.split()
        unknown = [w for w in words if w not in WORD_ID]
        if unknown:
            raise ValueError(f"tokenize: {unknown} not in the captioned-shapes vocabulary")
        ids = [WORD_ID[BOS], *(WORD_ID[w] for w in words), WORD_ID[EOT]]
        if len(ids) > context_length:
            raise ValueError(f"tokenize: {text!r} needs {len(ids)} tokens, more than {context_length}")
        out[i, :len(ids)] = torch.tensor(ids)
    return out


@dataclass
class CaptionedShapes:
    images: torch.Tensor                  # float32 N x 3 x H x W in [0, 1]
    captions: list[str]
    labels: torch.Tensor                  # int64 N: the index of the image's class in `classes`
    classes: tuple[tuple[int, int], ...]  # (colour, shape) index pairs
    counts: torch.Tensor                  # int64 N, 1..3

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        return dataset_fingerprint(self.images)


def make_captioned_shapes(n: int, size: int = 32, split: str = "train", seed: int | None = None) -> CaptionedShapes:
    """`n` captioned images of the seen classes (split 'train') or of the held-out ones (split
    'zero_shot'), every attribute drawn uniformly from a numpy Generator seeded by `seed` (default:
    the split's own stream)."""
    if split not in ("train", "zero_shot"):
        raise ValueError(f"make_captioned_shapes: split {split!r} is not 'train' or 'zero_shot'")
    if n < 0 or size < 12:
        raise ValueError(f"make_captioned_shapes: need n >= 0 and size >= 12, got n={n}, size={size}")
    classes = SEEN if split == "train" else HELD_OUT
    rng = np.random.default_rng(seed if seed is not None else (TRAIN_SEED if split == "train" else ZERO_SHOT_SEED))
    labels = rng.integers(len(classes), size=n)
    counts = rng.integers(1, len(COUNTS) + 1, size=n)
    size_idx = rng.integers(len(SIZES), size=n)
    cells = np.argsort(rng.random((n, 9)), axis=1)[:, :len(COUNTS)]  # distinct grid cells, the first `count` used
    jitter = rng.uniform(-0.06, 0.06, size=(n, len(COUNTS), 2))
    bg_level = rng.uniform(0.0, 0.15, size=n)
    radius = np.array([RADIUS[SIZES[i]] for i in size_idx]) * rng.uniform(0.9, 1.1, size=n)
    cx = (cells % 3 + 0.5) / 3 + jitter[..., 0]
    cy = (cells // 3 + 0.5) / 3 + jitter[..., 1]

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    shape_of = np.array([classes[k][1] for k in labels])
    colour_of = np.array([classes[k][0] for k in labels])
    r = torch.from_numpy(radius.astype(np.float32))[:, None, None]
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for j in range(len(COUNTS)):
        active = torch.from_numpy(counts > j)
        dx = (coords[None, None, :] - torch.from_numpy(cx[:, j].astype(np.float32))[:, None, None]) / r
        dy = (coords[None, :, None] - torch.from_numpy(cy[:, j].astype(np.float32))[:, None, None]) / r
        for s, kind in enumerate(SHAPES):
            sel = active & torch.from_numpy(shape_of == s)
            if sel.any():
                masks[sel] |= _shape_masks(kind, dx[sel], dy[sel])
    rgb = torch.tensor([ALL_COLOURS[c] for c in COLOURS], dtype=torch.float32)[torch.from_numpy(colour_of)]
    background = torch.from_numpy(bg_level.astype(np.float32))[:, None, None, None].expand(n, 3, size, size)
    images = torch.where(masks[:, None], rgb[:, :, None, None], background).contiguous()

    captions = []
    for i in range(n):
        k, count = classes[labels[i]], int(counts[i])
        words = f"{COUNTS[count - 1]} {SIZES[size_idx[i]]} {class_name(k) if count == 1 else class_plural(k)}"
        captions.append(words + (f" {_position_words(cx[i, 0], cy[i, 0])}" if count == 1 else ""))
    return CaptionedShapes(images, captions, torch.from_numpy(labels).to(torch.int64), classes,
                           torch.from_numpy(counts).to(torch.int64))

