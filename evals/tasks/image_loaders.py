"""Image classification datasets by name, for every vision paper and the classification evaluator.

- `digits`, `shapes`: the offline data of `images.py`, in memory (a `TensorDataset`);
- `cifar10`: torchvision's CIFAR-10 from a local root holding `cifar-10-batches-py/` (never
  downloaded here);
- `imagenet`: ImageNet-1k as torchvision `ImageFolder`s, `<root>/train/<class>/*.JPEG` and
  `<root>/val/<class>/*.JPEG` (the validation images sorted into class folders).

Every dataset yields (image, label) with images float32 C x H x W in [0, 1]; models normalise.
Training augmentation of the folder datasets is the standard one (random-resized crop and flip
for ImageNet, pad-4 random crop and flip for CIFAR-10); the in-memory ones are augmented on the
batch by the training loop.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from evals.tasks.images import SHAPES, dataset_fingerprint, load_digits, make_shapes

NUM_CLASSES = {"digits": 10, "shapes": len(SHAPES), "cifar10": 10, "imagenet": 1000}
CHANNELS = {"digits": 1, "shapes": 3, "cifar10": 3, "imagenet": 3}
SPLITS = {"digits": ("train", "test"), "shapes": ("train", "test"), "cifar10": ("train", "test"),
          "imagenet": ("train", "val")}
HELDOUT = {name: splits[1] for name, splits in SPLITS.items()}
SHAPES_SEEDS = {"train": 0, "test": 1}  # the two splits are drawn from disjoint streams
SHAPES_DEFAULT_N = {"train": 20_000, "test": 2_000}
EVAL_RESIZE = 0.875  # ImageNet evaluation: resize to size / 0.875, centre-crop to size


def check_name(name: str, split: str | None = None) -> None:
    if name not in SPLITS:
        raise ValueError(f"dataset {name!r} is not one of {', '.join(SPLITS)}")
    if split is not None and split not in SPLITS[name]:
        raise ValueError(f"dataset {name!r} has no split {split!r} (splits: {', '.join(SPLITS[name])})")


def missing_data(name: str, root: str | Path | None) -> list[str]:
    """What a dataset needs on disk and is absent (empty for the generated ones)."""
    check_name(name)
    if name == "cifar10":
        folder = Path(root or "") / "cifar-10-batches-py"
        return [] if folder.is_dir() else [f"CIFAR-10: no folder {folder} (the root {Path(root or '')} needs CIFAR-10's python-version batches there)"]
    if name == "imagenet":
        base = Path(root or "")
        return [f"ImageNet: no folder {base / s} (the root {base} needs train/ and val/, each with one folder of images per class)"
                for s in SPLITS["imagenet"] if not (base / s).is_dir()]
    return []


def image_dataset(name: str, split: str, image_size: int, root: str | Path | None = None, n: int = 0,
                  augment: bool = False) -> Dataset:
    """The named split at `image_size`. `n`: shapes are generated n at a time (0: the default
    size of the split); for the other datasets, n > 0 keeps the first n examples."""
    check_name(name, split)
    missing = missing_data(name, root)
    if missing:
        raise FileNotFoundError("; ".join(missing))
    if name == "digits":
        x, y = load_digits(split, size=image_size)
        return TensorDataset(x[:n or None], y[:n or None])
    if name == "shapes":
        batch = make_shapes(n or SHAPES_DEFAULT_N[split], size=image_size, seed=SHAPES_SEEDS[split])
        return TensorDataset(batch.images, batch.labels)
    ds = _cifar10(root, split, image_size, augment) if name == "cifar10" else _imagenet(root, split, image_size, augment)
    return torch.utils.data.Subset(ds, range(min(n, len(ds)))) if n else ds


def _cifar10(root, split: str, image_size: int, augment: bool) -> Dataset:
    from torchvision import datasets, transforms as T

    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
    steps += [T.Resize(image_size)] if image_size != 32 else []
    return datasets.CIFAR10(str(root), train=split == "train", download=False, transform=T.Compose(steps + [T.ToTensor()]))


def _imagenet(root, split: str, image_size: int, augment: bool) -> Dataset:
    from torchvision import datasets, transforms as T

    if augment:
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(int(round(image_size / EVAL_RESIZE))), T.CenterCrop(image_size)]
    return datasets.ImageFolder(str(Path(root) / split), transform=T.Compose([T.Lambda(lambda im: im.convert("RGB")), *steps, T.ToTensor()]))


def fingerprint(ds: Dataset) -> str:
    """In-memory data: a hash of the tensors; folder data: a hash of the list of (file, label)."""
    keep = list(ds.indices) if isinstance(ds, torch.utils.data.Subset) else None
    base = ds.dataset if keep is not None else ds
    if hasattr(base, "samples"):  # ImageFolder: the files, not their decoded pixels
        entries = [(str(Path(p).relative_to(base.root)), y) for p, y in base.samples]
        entries = entries if keep is None else [entries[i] for i in keep]
        return hashlib.sha256(repr(entries).encode()).hexdigest()[:16]
    tensors = base.tensors if isinstance(base, TensorDataset) else (torch.as_tensor(base.data), torch.as_tensor(base.targets))
    return "-".join(dataset_fingerprint(t if keep is None else t[keep]) for t in tensors)
