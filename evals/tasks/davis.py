"""DAVIS-format video segmentation data from a local root (SAM 2's full tier).

Layout (DAVIS 2017; SA-V's val and test sets are distributed in the same form):

    <root>/JPEGImages/480p/<video>/00000.jpg ...
    <root>/Annotations/480p/<video>/00000.png ...   palette PNGs, 0 background, k the k-th object
    <root>/ImageSets/2017/<split>.txt               the split's video names, one a line

Each object of each video is a video of its own (SAM 2 segments objects one at a time), from the
first frame where it is annotated; frames are resized to size x size (bilinear), masks by nearest
neighbour. `visible[t]` is the object's area on frame t over its largest area in the video (the
frames after one under half count as after an occlusion).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGES, MASKS, SETS = "JPEGImages/480p", "Annotations/480p", "ImageSets/2017"


@dataclass
class ObjectVideo:
    name: str              # <video>/<object id>
    frames: torch.Tensor   # T x 3 x S x S float32 in [0, 1]
    masks: torch.Tensor    # T x S x S bool
    visible: torch.Tensor  # T float32


def missing(root: str | Path, splits: tuple[str, ...]) -> list[str]:
    """What of a DAVIS-format root is not there, each named with where it was looked for."""
    root = Path(root)
    out = [f"DAVIS-format {d} (looked for {root / d})" for d in (IMAGES, MASKS) if not (root / d).is_dir()]
    out += [f"DAVIS-format split list {s} (looked for {root / SETS / (s + '.txt')})" for s in splits
            if not (root / SETS / f"{s}.txt").is_file()]
    return out


def videos(root: str | Path, split: str) -> list[str]:
    path = Path(root) / SETS / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"davis: no split list {path} (a DAVIS-format root has {SETS}/<split>.txt)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _load(root: Path, video: str, size: int, max_frames: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    names = sorted(p.stem for p in (root / MASKS / video).glob("*.png"))
    if max_frames:
        names = names[:max_frames]
    if not names:
        raise FileNotFoundError(f"davis: no annotations under {root / MASKS / video}")
    frames = torch.stack([torch.from_numpy(np.asarray(Image.open(root / IMAGES / video / f"{n}.jpg").convert("RGB"),
                                                      dtype=np.float32) / 255.0).permute(2, 0, 1) for n in names])
    labels = torch.stack([torch.from_numpy(np.asarray(Image.open(root / MASKS / video / f"{n}.png"), dtype=np.uint8).copy())
                          for n in names])
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest")[:, 0].to(torch.uint8)
    return frames, labels


def _object_video(name: str, frames: torch.Tensor, labels: torch.Tensor, k: int) -> ObjectVideo | None:
    masks = labels == k
    present = masks.flatten(1).any(1).nonzero()
    if len(present) == 0 or int(present[0]) >= len(frames) - 1:
        return None
    start = int(present[0])
    masks = masks[start:]
    area = masks.flatten(1).sum(1).float()
    return ObjectVideo(f"{name}/{k}", frames[start:], masks, area / area.max())


def davis_objects(root: str | Path, split: str, size: int, n: int = 0, max_frames: int = 0):
    """The split's objects as videos (the first n, 0: all), and the protocol."""
    root = Path(root)
    out: list[ObjectVideo] = []
    for video in videos(root, split):
        frames, labels = _load(root, video, size, max_frames)
        for k in sorted(int(v) for v in labels.unique() if 0 < v < 255):
            if (v := _object_video(video, frames, labels, k)) is not None:
                out.append(v)
            if n and len(out) >= n:
                break
        if n and len(out) >= n:
            break
    if not out:
        raise ValueError(f"davis: the {split} split under {root} has no annotated objects")
    protocol = {"dataset": "davis", "root": str(root), "split": split, "n": len(out), "resolution": size,
                "max_frames": max_frames or "all", "objects": [v.name for v in out][:50],
                "data_fingerprint": fingerprint(root)}
    return out, protocol


def davis_clips(root: str | Path, split: str, size: int, frames: int, batch: int, seed: int, step: int):
    """A training batch of `batch` clips of `frames` frames, a pure function of (seed, step): a video, an
    object present on the clip's first frame, a start; the object is 1 in `objects`, the others 2..K."""
    root = Path(root)
    names = videos(root, split)
    rng = np.random.default_rng([seed, step])
    out_f, out_m, out_o = [], [], []
    while len(out_f) < batch:
        video = names[int(rng.integers(len(names)))]
        all_frames, labels = _load(root, video, size)
        if len(all_frames) < frames:
            continue
        start = int(rng.integers(len(all_frames) - frames + 1))
        clip_f, clip_l = all_frames[start:start + frames], labels[start:start + frames]
        ids = [int(v) for v in clip_l[0].unique() if 0 < v < 255]
        if not ids:
            continue
        k = ids[int(rng.integers(len(ids)))]
        others = clip_l.clone().long()
        others[(clip_l == 0) | (clip_l == 255)] = 0
        objects = torch.where(clip_l == k, 1, torch.where(others > 0, others + 1, 0)).clamp(max=255).to(torch.uint8)
        out_f.append(clip_f)
        out_m.append(clip_l == k)
        out_o.append(objects)
    return torch.stack(out_f), torch.stack(out_m), torch.stack(out_o)


def fingerprint(root: str | Path) -> str:
    """sha256 of the annotation files' names and sizes (first 16 hex digits)."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted((root / MASKS).rglob("*.png")):
        h.update(f"{p.relative_to(root)}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


def write_davis(folder: str | Path, videos_per_split: int = 2, frames: int = 5, size: int = 48) -> Path:
    """A tiny DAVIS-format root of moving-shapes videos (train and val lists), for dry runs and tests."""
    from PIL import Image

    from evals.tasks.moving_shapes import make_videos

    root = Path(folder)
    (root / SETS).mkdir(parents=True, exist_ok=True)
    for s, split in enumerate(("train", "val")):
        v = make_videos(videos_per_split, "train" if split == "train" else "test", frames, size)
        names = [f"{split}-shapes-{i}" for i in range(videos_per_split)]
        for i, name in enumerate(names):
            (root / IMAGES / name).mkdir(parents=True, exist_ok=True)
            (root / MASKS / name).mkdir(parents=True, exist_ok=True)
            for t in range(frames):
                rgb = (v.frames[i, t].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                Image.fromarray(rgb).save(root / IMAGES / name / f"{t:05d}.jpg", quality=95)
                png = Image.new("P", (size, size))
                png.putdata(v.objects[i, t].flatten().tolist())
                png.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200] + [0] * (768 - 12))
                png.save(root / MASKS / name / f"{t:05d}.png")
        (root / SETS / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root
