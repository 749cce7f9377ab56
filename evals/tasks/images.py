"""Image data for the offline tiers: real handwritten digits and procedurally drawn shapes.

- `load_digits`: scikit-learn's handwritten digits (1,797 real 8x8 grey images of 0-9, shipped
  inside the package), with a fixed stratified train/test split.
- `make_shapes`: coloured shapes (circle, square, triangle, cross, diamond, ring) of three sizes
  at any position on a dark, light or noisy background, with the class label, the shape's pixel
  mask and a caption naming what is drawn. Any count, any resolution, deterministic from a seed,
  vectorised: the vision, segmentation, text-to-image and captioning papers all draw from it.
- `dataset_fingerprint`: a short hash of a tensor's bytes, recorded with a run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SPLITS = ("train", "test", "all")
DIGITS_TEST_FRACTION = 0.2

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring")
COLOURS = {
    "red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.3, 0.95), "yellow": (0.95, 0.9, 0.1),
    "magenta": (0.9, 0.2, 0.85), "cyan": (0.1, 0.85, 0.9), "orange": (1.0, 0.55, 0.05),
}
SIZES = {"small": 0.14, "medium": 0.21, "large": 0.29}  # the shape's radius as a fraction of the side
BACKGROUNDS = ("dark", "light", "noisy")


def load_digits(split: str = "train", size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as float32 N x 1 x size x size in [0, 1] and int64 labels. The split is stratified by
    class, 80/20, drawn by `seed` (the same seed always gives the same split)."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    if split not in SPLITS:
        raise ValueError(f"load_digits: split {split!r} is not one of {SPLITS}")
    if size < 1:
        raise ValueError(f"load_digits: size must be positive, got {size}")
    data = sk_digits()
    x = torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values are 0..16
    y = torch.as_tensor(data.target, dtype=torch.int64)
    if split != "all":
        train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=DIGITS_TEST_FRACTION,
                                               stratify=data.target, random_state=seed)
        idx = torch.as_tensor(np.sort(train_idx if split == "train" else test_idx))
        x, y = x[idx], y[idx]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return x.contiguous(), y


@dataclass
class ShapesBatch:
    images: torch.Tensor      # float32 N x 3 x H x W in [0, 1]
    labels: torch.Tensor      # int64 N, the index of the shape in `classes`
    masks: torch.Tensor       # bool N x H x W, the shape's pixels
    captions: list[str]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _shape_masks(kind: str, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Membership of each pixel, in coordinates centred on the shape and scaled by its radius
    (y grows downwards). The extents are chosen so that the shapes have comparable areas."""
    ax, ay = dx.abs(), dy.abs()
    if kind == "circle":
        return dx ** 2 + dy ** 2 <= 1.0
    if kind == "square":
        return torch.maximum(ax, ay) <= 0.85
    if kind == "triangle":  # apex up, base at dy = 0.8
        return (dy <= 0.8) & (ax <= (dy + 1.0) / 1.8 * 1.05)
    if kind == "cross":
        return ((ax <= 0.3) & (ay <= 1.0)) | ((ay <= 0.3) & (ax <= 1.0))
    if kind == "diamond":
        return ax + ay <= 1.15
    if kind == "ring":
        r2 = dx ** 2 + dy ** 2
        return (r2 <= 1.0) & (r2 >= 0.5 ** 2)
    raise ValueError(f"make_shapes: unknown shape class {kind!r} (known: {', '.join(SHAPES)})")


def _position_words(cx: float, cy: float) -> str:
    v = ("top", "middle", "bottom")[min(int(cy * 3), 2)]
    h = ("left", "center", "right")[min(int(cx * 3), 2)]
    if v == "middle" and h == "center":
        return "in the center"
    if v == "middle":
        return f"on the {h}"
    if h == "center":
        return f"at the {v}"
    return f"at the {v} {h}"


CHUNK = 1000  # parameters are drawn per chunk of this many images, each chunk from its own stream


def _draw(seed: int, start: int, n: int, n_classes: int, size: int) -> dict[str, np.ndarray]:
    """The attributes of images start..start+n-1 (start a multiple of CHUNK, n <= CHUNK). Chunk c
    draws all of its CHUNK images from a stream seeded by (seed, c) and keeps the first n, so the
    first m images of a larger set are exactly the set of m."""
    rng = np.random.default_rng([seed, start // CHUNK])
    n_kept, n = n, CHUNK
    out = {"label": rng.integers(n_classes, size=n), "colour": rng.integers(len(COLOURS), size=n),
           "size": rng.integers(len(SIZES), size=n), "bg": rng.integers(len(BACKGROUNDS), size=n)}
    out["radius"] = np.array(list(SIZES.values()))[out["size"]] * rng.uniform(0.9, 1.1, size=n)
    # the whole shape stays inside the image
    out["cx"] = out["radius"] + rng.uniform(size=n) * (1.0 - 2.0 * out["radius"])
    out["cy"] = out["radius"] + rng.uniform(size=n) * (1.0 - 2.0 * out["radius"])
    out["bg_level"] = np.where(out["bg"] == 1, rng.uniform(0.8, 0.95, size=n), rng.uniform(0.0, 0.15, size=n))
    out = {k: v[:n_kept] for k, v in out.items()}
    # the noisy backgrounds' pixels, in order, from a stream of their own (a prefix stays a prefix)
    noise_rng = np.random.default_rng([seed, start // CHUNK, 1])
    out["noise"] = noise_rng.random((int((out["bg"] == 2).sum()), 3, size, size), dtype=np.float32) * 0.3
    return out


def make_shapes(n: int, size: int = 32, seed: int = 0, classes: tuple[str, ...] = SHAPES) -> ShapesBatch:
    """`n` images of one shape each. Every attribute (class, colour, size, centre, background) is
    drawn uniformly from numpy Generators seeded by `seed`; the drawing itself is torch. The first
    m images of `make_shapes(n, ...)` are `make_shapes(m, ...)`: nested training sets for free."""
    if n < 0 or size < 4:
        raise ValueError(f"make_shapes: need n >= 0 and size >= 4, got n={n}, size={size}")
    classes = tuple(classes)
    for kind in classes:
        if kind not in SHAPES:
            raise ValueError(f"make_shapes: unknown shape class {kind!r} (known: {', '.join(SHAPES)})")
    chunks = [_draw(seed, s, min(CHUNK, n - s), len(classes), size) for s in range(0, n, CHUNK)]
    chunks = chunks or [_draw(seed, 0, 0, len(classes), size)]
    p = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    labels, colour_idx, size_idx, bg_idx, cx, cy = p["label"], p["colour"], p["size"], p["bg"], p["cx"], p["cy"]
    noisy = bg_idx == 2

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres in [0, 1]
    r = torch.from_numpy(p["radius"].astype(np.float32))[:, None, None]
    dx = (coords[None, None, :] - torch.from_numpy(cx.astype(np.float32))[:, None, None]) / r
    dy = (coords[None, :, None] - torch.from_numpy(cy.astype(np.float32))[:, None, None]) / r
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    labels_t = torch.from_numpy(labels)
    for k, kind in enumerate(classes):
        sel = labels_t == k
        if sel.any():
            masks[sel] = _shape_masks(kind, dx[sel], dy[sel])
    # At very low resolutions a small shape may miss every pixel centre: keep its centre pixel.
    empty = ~masks.flatten(1).any(1)
    if empty.any():
        ix = torch.from_numpy(np.minimum((cx * size).astype(np.int64), size - 1))
        iy = torch.from_numpy(np.minimum((cy * size).astype(np.int64), size - 1))
        masks[empty, iy[empty], ix[empty]] = True

    background = torch.from_numpy(p["bg_level"].astype(np.float32))[:, None, None, None].expand(n, 3, size, size).clone()
    background[torch.from_numpy(noisy)] += torch.from_numpy(p["noise"].astype(np.float32))
    colour = torch.tensor(list(COLOURS.values()), dtype=torch.float32)[torch.from_numpy(colour_idx)]
    images = torch.where(masks[:, None], colour[:, :, None, None], background).clamp_(0.0, 1.0)

    colour_names, size_names = list(COLOURS), list(SIZES)
    captions = [f"a {size_names[s]} {colour_names[c]} {classes[k]} {_position_words(x, y)} on a {BACKGROUNDS[b]} background"
                for k, c, s, b, x, y in zip(labels, colour_idx, size_idx, bg_idx, cx, cy)]
    return ShapesBatch(images.contiguous(), labels_t.to(torch.int64), masks, captions, classes)


def dataset_fingerprint(tensor: torch.Tensor) -> str:
    """sha256 of the tensor's dtype, shape and bytes, first 16 hex digits."""
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
