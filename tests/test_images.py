"""The offline image data (digits, shapes) and the real-dataset loaders on tiny on-disk fixtures."""

import math

import numpy as np
import pytest
import torch

from evals.tasks.images import (COLOURS, SHAPES, SIZES, dataset_fingerprint, load_digits,
                                         make_shapes)


# ----------------------------------------------------------------------------- digits

def test_digits_are_sklearn_digits_scaled_to_unit_range():
    from sklearn.datasets import load_digits as sk

    x, y = load_digits("all")
    ref = sk()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x[:, 0], torch.as_tensor(ref.images, dtype=torch.float32) / 16)
    assert torch.equal(y, torch.as_tensor(ref.target))


def test_digits_split_is_stratified_disjoint_and_deterministic():
    x_tr, y_tr = load_digits("train")
    x_te, y_te = load_digits("test")
    x_all, _ = load_digits("all")
    assert len(y_tr) + len(y_te) == 1797 and abs(len(y_te) - 0.2 * 1797) <= 1
    rows = lambda x: {tuple(r) for r in x.flatten(1).tolist()}  # noqa: E731
    assert rows(x_tr) | rows(x_te) <= rows(x_all)
    frac = torch.bincount(y_te, minlength=10) / torch.bincount(y_tr, minlength=10)
    assert frac.min() > 0.22 and frac.max() < 0.28  # 20/80 per class, up to rounding
    assert torch.equal(load_digits("train")[0], x_tr)
    assert not torch.equal(load_digits("train", seed=1)[1], y_tr)


def test_digits_resize_and_bad_split():
    x, _ = load_digits("test", size=16)
    assert x.shape[1:] == (1, 16, 16) and 0 <= x.min() and x.max() <= 1
    # bilinear upsampling keeps the mean brightness of an image (to within edge effects)
    assert torch.allclose(x.mean((1, 2, 3)), load_digits("test")[0].mean((1, 2, 3)), atol=0.03)
    with pytest.raises(ValueError, match="split 'val'"):
        load_digits("val")


# ----------------------------------------------------------------------------- shapes

def test_shapes_types_and_determinism():
    a, b, c = make_shapes(64, 24, seed=3), make_shapes(64, 24, seed=3), make_shapes(64, 24, seed=4)
    assert a.images.shape == (64, 3, 24, 24) and a.images.dtype == torch.float32
    assert a.masks.shape == (64, 24, 24) and a.masks.dtype == torch.bool and a.labels.dtype == torch.int64
    assert 0 <= a.images.min() and a.images.max() <= 1
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and a.captions == b.captions
    assert not torch.equal(a.images, c.images)
    assert len(SHAPES) >= 5 and set(a.labels.tolist()) <= set(range(len(SHAPES)))


def test_shapes_masks_pixels_and_captions_agree():
    batch = make_shapes(300, 48, seed=0)
    colours = torch.tensor(list(COLOURS.values()))
    for img, mask, label, cap in zip(batch.images, batch.masks, batch.labels, batch.captions):
        words = cap.split()
        assert words[1] in SIZES and words[2] in COLOURS and words[3] == SHAPES[label]
        colour = colours[list(COLOURS).index(words[2])]
        assert mask.any()
        assert torch.allclose(img[:, mask], colour[:, None].expand(3, int(mask.sum())))
        # the centroid of the mask lies in the third of the image that the caption names
        ys, xs = mask.nonzero(as_tuple=True)
        cy, cx = (ys.float().mean() + 0.5) / 48, (xs.float().mean() + 0.5) / 48
        if "top" in words:
            assert cy < 0.4
        if "bottom" in words:
            assert cy > 0.6
        if "left" in words:
            assert cx < 0.4
        if "right" in words:
            assert cx > 0.6


def test_shapes_geometry_circle_area():
    """A circle of radius r (a fraction of the side) covers pi r^2 of the image."""
    batch = make_shapes(400, 96, seed=1, classes=("circle",))
    for mask, cap in zip(batch.masks, batch.captions):
        r = SIZES[cap.split()[1]]
        area = mask.float().mean().item()
        assert math.pi * (0.9 * r) ** 2 * 0.95 <= area <= math.pi * (1.1 * r) ** 2 * 1.05


def test_shapes_any_resolution_and_bad_class():
    assert make_shapes(10, 4, seed=0).masks.flatten(1).any(1).all()  # tiny images keep a pixel per shape
    assert make_shapes(0, 16).images.shape == (0, 3, 16, 16)
    with pytest.raises(ValueError, match="'hexagon'"):
        make_shapes(4, classes=("circle", "hexagon"))


def test_fingerprint_depends_on_bytes_shape_and_dtype():
    x = torch.arange(12, dtype=torch.float32)
    assert dataset_fingerprint(x) == dataset_fingerprint(x.clone())
    assert dataset_fingerprint(x) != dataset_fingerprint(x.reshape(3, 4))
    assert dataset_fingerprint(x) != dataset_fingerprint(x.double())
    y = x.clone()
    y[5] += 1e-6
    assert dataset_fingerprint(x) != dataset_fingerprint(y)
    assert len(dataset_fingerprint(x)) == 16 and np.all([c in "0123456789abcdef" for c in dataset_fingerprint(x)])


def test_shapes_are_nested_across_sizes():
    """The first m images of a larger set are the set of m (training sets of 1k, 5k, 20k nest)."""
    small, large = make_shapes(1500, 16, seed=7), make_shapes(2600, 16, seed=7)
    assert torch.equal(large.images[:1500], small.images) and torch.equal(large.masks[:1500], small.masks)
    assert large.captions[:1500] == small.captions


# ----------------------------------------------------------------------------- real-dataset loaders

def _write_image_folder(root, split, colours, fmt):
    from PIL import Image

    for cls, colour in colours.items():
        (root / split / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (20 + 4 * i, 24), colour).save(root / split / cls / f"img{i}.{fmt}")


def test_imagenet_loader_reads_class_folders(tmp_path):
    """A tiny ImageNet in its on-disk layout: root/{train,val}/<class>/<image> (JPEG and PNG)."""
    from evals.tasks.image_loaders import fingerprint, image_dataset

    colours = {"n01440764": (255, 0, 0), "n01443537": (0, 0, 255)}
    _write_image_folder(tmp_path, "train", colours, "JPEG")
    _write_image_folder(tmp_path, "val", colours, "png")
    val = image_dataset("imagenet", "val", 16, tmp_path)
    assert len(val) == 4
    x, y = val[3]
    assert x.shape == (3, 16, 16) and y == 1
    assert torch.allclose(x, torch.tensor([0.0, 0.0, 1.0])[:, None, None].expand(3, 16, 16))  # PNG is lossless
    train = image_dataset("imagenet", "train", 16, tmp_path, augment=True)
    x, y = train[0]
    assert x.shape == (3, 16, 16) and y == 0 and (x[0] > 0.9).all() and (x[2] < 0.1).all()  # JPEG, nearly red
    assert fingerprint(val) == fingerprint(image_dataset("imagenet", "val", 32, tmp_path))  # the file list
    assert len(image_dataset("imagenet", "val", 16, tmp_path, n=3)) == 3


def test_missing_roots_are_named(tmp_path):
    from evals.tasks.image_loaders import image_dataset, missing_data

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "imagenet" / "train")):
        image_dataset("imagenet", "val", 16, tmp_path / "imagenet")
    assert "cifar-10-batches-py" in missing_data("cifar10", tmp_path)[0]
    assert missing_data("shapes", None) == []
    with pytest.raises(ValueError, match="no split 'val'"):
        image_dataset("digits", "val", 8)


def test_cifar10_loader_reads_the_python_batches(tmp_path, monkeypatch):
    """CIFAR-10's own format: pickled dicts of uint8 rows (3072 = 3 x 32 x 32, channel-major).
    The fixture is our own data, pickled here because that is the format; torchvision unpickles
    it. The md5 check of the real files is switched off for the fixture."""
    import pickle

    import numpy as np
    import torchvision.datasets.cifar

    from evals.tasks.image_loaders import fingerprint, image_dataset

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [1, 7, 3]}
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    test = image_dataset("cifar10", "test", 32, tmp_path)
    assert len(test) == 3 and len(image_dataset("cifar10", "train", 32, tmp_path)) == 15
    x, y = test[1]
    ref = torch.as_tensor(batches["test_batch"]["data"][1].reshape(3, 32, 32), dtype=torch.float32) / 255
    assert y == 7 and torch.allclose(x, ref)
    assert image_dataset("cifar10", "test", 16, tmp_path)[0][0].shape == (3, 16, 16)
    assert len(fingerprint(test)) == 33
