"""ADE20K scene parsing (ADEChallengeData2016) from a local root: ControlNet's segmentation-conditioned
full tier (arXiv 2302.05543, Section 4.3 and Table 2) trains on its pairs and is scored on them.

Layout (the SceneParsing release, http://sceneparsing.csail.mit.edu, ADEChallengeData2016.zip):

    <root>/images/training/ADE_train_00000001.jpg ...      20,210 RGB images
    <root>/images/validation/ADE_val_00000001.jpg ...       2,000
    <root>/annotations/training/ADE_train_00000001.png ... one uint8 label per pixel: 0 "other"
    <root>/annotations/validation/ADE_val_00000001.png ...  (not scored), 1..150 the classes below
    <root>/captions_<split>.json                            optional: {"ADE_train_00000001": "a caption", ...}

A pair is read as the image and its label map, the short side resized to `size` (bilinear for the
image, nearest for the labels) and centre-cropped to size x size. The prompt is the image's caption
where a captions file is given (the paper captions its training images with BLIP), else the names of
the classes present, largest first ("a photo of wall, floor, bed"). The condition the network sees
is the label map painted with a fixed palette (`colorize`), as the paper conditions on ADE20K's
colour-coded segmentations.

`mean_iou` is the scoring rule of the `segmentation_fidelity` evaluator (per image: the mean over the
classes present in the condition or the prediction of |P and T| / |P or T|, pixels labelled 0 left out).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLITS = ("training", "validation")

# The 150 classes of ADE20K scene parsing, label k + 1 = CLASSES[k] (objectInfo150; the order
# OneFormer's ADE20K checkpoints predict in).
CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier",
    "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
NUM_CLASSES = len(CLASSES)  # 150; label 0 is "other"


@dataclass
class Pair:
    name: str              # ADE_train_00000001
    image: torch.Tensor    # 3 x S x S float32 in [0, 1]
    labels: torch.Tensor   # S x S int64, 0 (other) .. 150
    prompt: str


def missing(root: str | Path, splits: tuple[str, ...] = SPLITS, captions: str = "") -> list[str]:
    """What of an ADE20K root is not there, each named with where it was looked for and what goes there."""
    root = Path(root)
    out = []
    for split in splits:
        for kind, what in (("images", "the RGB .jpg images"), ("annotations", "the label .png files")):
            if not (root / kind / split).is_dir():
                out.append(f"ADE20K {kind}/{split}: no folder {root / kind / split} (put {what} of "
                           f"ADEChallengeData2016.zip's {kind}/{split} there)")
    if captions and not Path(captions).is_file():
        out.append(f"ADE20K captions: no file {captions} (a JSON object from image name to caption; "
                   f"or leave the config's `captions` empty for class-name prompts)")
    return out


def names(root: str | Path, split: str, n: int = 0) -> list[str]:
    """The split's image names with an annotation, sorted (the first n; 0: all)."""
    folder = Path(root) / "annotations" / split
    if not folder.is_dir():
        raise FileNotFoundError(f"ade20k: no folder {folder} (an ADE20K root has annotations/{split}/*.png)")
    out = sorted(p.stem for p in folder.glob("*.png") if (Path(root) / "images" / split / f"{p.stem}.jpg").is_file())
    if not out:
        raise ValueError(f"ade20k: no image with an annotation under {Path(root) / 'images' / split}")
    return out[:n] if n else out


def class_prompt(labels: torch.Tensor, k: int = 5) -> str:
    """'a photo of' the names of the (at most k) largest classes present."""
    counts = torch.bincount(labels.flatten(), minlength=NUM_CLASSES + 1)[1:]
    present = [int(i) for i in counts.argsort(descending=True) if counts[i] > 0][:k]
    return "a photo of " + ", ".join(CLASSES[i] for i in present) if present else "a photo"


def _resize_crop(img, size: int, resample):
    from PIL import Image  # noqa: F401

    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), resample)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def read_pair(root: str | Path, split: str, name: str, size: int, captions: dict[str, str] | None = None) -> Pair:
    from PIL import Image

    root = Path(root)
    image = _resize_crop(Image.open(root / "images" / split / f"{name}.jpg").convert("RGB"), size, Image.BILINEAR)
    labels = _resize_crop(Image.open(root / "annotations" / split / f"{name}.png"), size, Image.NEAREST)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    if y.max() > NUM_CLASSES:
        raise ValueError(f"ade20k: {root / 'annotations' / split / name}.png has label {int(y.max())} > {NUM_CLASSES}")
    prompt = captions[name] if captions and name in captions else class_prompt(y)
    return Pair(name, x, y, prompt)


def load_captions(path: str) -> dict[str, str] | None:
    return json.loads(Path(path).read_text()) if path else None


def palette() -> torch.Tensor:
    """151 x 3 uint8: a fixed colour per label (0 black), the bit-interleaved colour map of PASCAL VOC's
    devkit extended to 151 labels, so that nearby ids get distinct colours."""
    out = torch.zeros(NUM_CLASSES + 1, 3, dtype=torch.uint8)
    for i in range(NUM_CLASSES + 1):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = torch.tensor([r, g, b], dtype=torch.uint8)
    return out


def colorize(labels: torch.Tensor) -> torch.Tensor:
    """Label maps (N x) H x W to the condition images (N x) 3 x H x W float in [0, 1]."""
    rgb = palette().to(labels.device)[labels.long()].float() / 255.0
    return rgb.movedim(-1, -3)


def mean_iou(pred: torch.Tensor, target: torch.Tensor, ignore: int = 0) -> float:
    """One image's mean IoU: over the classes present in `target` or `pred` (pixels where the target
    is `ignore` left out of both), |pred = c and target = c| / |pred = c or target = c|."""
    valid = target != ignore
    p, t = pred[valid].long(), target[valid].long()
    if t.numel() == 0:
        return float("nan")
    n = int(max(p.max(), t.max())) + 1
    inter = torch.bincount(t[p == t], minlength=n).double()
    union = torch.bincount(p, minlength=n).double() + torch.bincount(t, minlength=n).double() - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


def fingerprint(root: str | Path, split: str = "training") -> str:
    """sha256 of the split's sorted (name, image size, annotation size) list: which files a run saw."""
    root = Path(root)
    h = hashlib.sha256()
    for name in names(root, split):
        h.update(f"{name} {(root / 'images' / split / f'{name}.jpg').stat().st_size} "
                 f"{(root / 'annotations' / split / f'{name}.png').stat().st_size}\n".encode())
    return h.hexdigest()
