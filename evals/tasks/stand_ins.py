"""Tiny stand-ins of the image datasets and FineWeb's token shards on disk, for `repro reproduce --dry-run` where the real
data is absent (evals/dry_run.py): the same on-disk format as the real data, so that the real
loaders of `image_loaders` read them, the model sees images of the tier's resolution, and the
evaluators run end to end on a machine without ImageNet.

- `imagenet`: `<root>/train/<class>/*.JPEG` and `<root>/val/<class>/*.JPEG`, as torchvision's
  `ImageFolder` reads ImageNet-1k (two classes of two random images each);
- `cifar10`: `<root>/cifar-10-batches-py/`, CIFAR-10's python-version batches of random images;
- `image_data(config, folder)`: a paper's `stand_in_data` hook for configs naming a `dataset`
  and its `data_root`: writes the dataset's stand-in under `folder` and returns the config with
  `data_root` pointing at it (configs of the generated datasets come back unchanged);
- `fineweb_data(config, folder)`: the same for configs reading FineWeb's GPT-2 token shards from
  `data_root` (one train and one validation shard of random token ids, modded-nanogpt's format).

Nothing here is part of a run: training and evaluation read the real data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from evals.tasks import fineweb
from evals.tasks.image_loaders import SPLITS, missing_data

STAND_IN_CLASSES = 2
STAND_IN_PER_CLASS = 2
STAND_IN_SIDE = 64  # pixels; the loaders resize to the tier's resolution as they do ImageNet's


def write_imagenet(root: Path, classes: int = STAND_IN_CLASSES, per_class: int = STAND_IN_PER_CLASS,
                   side: int = STAND_IN_SIDE, seed: int = 0) -> Path:
    """An ImageNet-layout tree of random RGB JPEGs at `root`; returns `root`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in SPLITS["imagenet"]:
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"stand_in_{c}_{i}.JPEG", quality=90)
    return root


def write_cifar10(root: Path, per_split: int = 20, seed: int = 0) -> Path:
    """CIFAR-10's python-version batches (`<root>/cifar-10-batches-py/data_batch_1..5`, `test_batch`,
    `batches.meta`, pickled dicts of uint8 rows of 3 x 32 x 32 pixels and labels) of random images;
    returns `root`. torchvision checks these files against the published files' md5 sums: the
    stand-in's sums are registered with torchvision's `CIFAR10` in this process (the dry run's) alone."""
    import hashlib
    import pickle

    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(seed)
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: dict) -> list[str]:
        (folder / name).write_bytes(pickle.dumps(data))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    def batch(n: int) -> dict:
        return {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8), "labels": [i % 10 for i in range(n)]}

    CIFAR10.train_list = [write(name, batch(per_split // 5 or 1)) for name, _ in CIFAR10.train_list[:5]]
    CIFAR10.test_list = [write(name, batch(per_split)) for name, _ in CIFAR10.test_list]
    name, md5 = write(CIFAR10.meta["filename"], {CIFAR10.meta["key"]: [f"class_{i}" for i in range(10)]})
    CIFAR10.meta = {**CIFAR10.meta, "md5": md5}
    return root


WRITERS = {"imagenet": write_imagenet, "cifar10": write_cifar10}


def image_data(config: Any, folder: Path) -> Any:
    """`config` with its `data_root` at a stand-in of its `dataset` written under `folder`, where
    the real one is missing and a stand-in of it can be written; else `config` itself."""
    name, root = getattr(config, "dataset", None), getattr(config, "data_root", None)
    if name not in WRITERS or not missing_data(name, root):
        return config
    return dataclasses.replace(config, data_root=str(WRITERS[name](Path(folder) / name)))


FINEWEB_STAND_IN_TOKENS = 1 << 15


def fineweb_data(config: Any, folder: Path) -> Any:
    """`config` with `data_root` at stand-in FineWeb shards written under `folder`, where the
    configured root lacks its shards; else `config` itself."""
    if not fineweb.missing(config.data_root):
        return config
    root = write_fineweb(Path(folder) / "fineweb10B", FINEWEB_STAND_IN_TOKENS + 1, FINEWEB_STAND_IN_TOKENS + 1)
    return dataclasses.replace(config, data_root=str(root))


def write_fineweb(root: Path, train_tokens: int, val_tokens: int) -> Path:
    """One train and one validation shard of random GPT-2 token ids under `root`, in the shards' format."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("fineweb_train_000001.bin", train_tokens), ("fineweb_val_000000.bin", val_tokens)):
        fineweb.write_shard(root / name, rng.integers(fineweb.VOCAB_SIZE, size=n, dtype=np.uint16))
    return root
