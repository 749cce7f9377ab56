"""A class-conditional image generator scored per setting: FID (the fid evaluator's protocol and
feature extractor) and sample class accuracy, against the guidance scale and the sampler, with the
time each sampler takes per image.

Protocol:
- the model draws `num_samples` images per setting with `agent.sample_classes(labels, generator,
  guidance, sampler, steps)`: balanced labels (image i of class i mod K), and a generator seeded with
  `seed` for every setting, so that the settings start from the same noise;
- settings: DDIM with `ddim_steps` steps at each scale s of `guidance_scales` (`fid_g{s}`,
  `class_acc_g{s}`; only s = 1 where the agent's `measured` lacks "guidance"), and, where
  `measured` names "ancestral", ancestral sampling over all T steps at s = 1 (`fid_ancestral`,
  `class_acc_ancestral`);
- `sample_seconds_ddim` / `sample_seconds_ancestral`: wall seconds per image of the s = 1 draws
  (the whole of `sample_classes`: the sampler's network passes and, for a latent model, the
  decoder), `time_ratio_ancestral` their ratio (timings: not repeatable by a re-execution);
- FID against the dataset's training split through the fid evaluator's extractor, with the
  same real floor (`fid_real_floor`: held-out images, as many as the samples) and noise baseline;
  the reference's features are computed once per evaluation;
- class accuracy: the arg-max of `classifier` (`shapes-cnn`: a small CNN the project trains on the
  shapes training split, evals/assets/shapes_cnn.safetensors, sha256 in the protocol) equals the
  label asked for (v3: the classifier is trained on sharp images and on images blurred by 2 and 4,
  `blurred`; v2's, trained on sharp ones only, was at chance on images blurred by 2, so any sample
  short of pixel-sharp counted as wrong whatever its shape); `class_acc_real` is its accuracy on the held-out floor images. Per-image
  correctness is kept as samples, so the accuracies are checkable from the record;
- `train_gflops`: the training compute the agent reports (`training_gflops`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from evals.contract import ClassConditionalSampler, capability
from evals.evaluators import Measured, register, shrunk

SHAPES_CLASSIFIER = Path(__file__).resolve().parent.parent / "assets" / "shapes_cnn.safetensors"
SHAPES_SIZE = 32


class ClassConditionalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Literal["digits", "shapes", "cifar10", "imagenet"] = "shapes"
    data_root: str | None = None
    extractor: Literal["digits-cnn", "inception-v3-compat"] = "digits-cnn"
    inception_weights: str | None = None
    classifier: Literal["shapes-cnn", "none"] = "shapes-cnn"
    num_samples: int = Field(ge=2)
    batch_size: int = Field(500, ge=1)
    guidance_scales: list[float] = Field(default_factory=lambda: [1.0, 1.5, 3.0, 5.0])
    ddim_steps: int = Field(50, ge=1)
    reference_limit: int = Field(0, ge=0)   # n images of the training split as the reference (0: all of it)
    seed: int = 0


def _names(o: ClassConditionalOptions) -> list[str]:
    names = ["fid_g*", "fid_ancestral", "fid_real_floor", "fid_noise_baseline", "sample_seconds_ddim",
             "sample_seconds_ancestral", "time_ratio_ancestral", "train_gflops"]
    if o.classifier != "none":
        names += ["class_acc_g*", "class_acc_ancestral", "class_acc_real"]
    return names


# -- the shapes classifier ----------------------------------------------------------------------
class ShapesCNN(nn.Module):
    def __init__(self, classes: int = 6):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float N x 3 x 32 x 32 in [0, 1]; logits."""
        if x.shape[-1] != SHAPES_SIZE:
            x = F.interpolate(x, size=(SHAPES_SIZE, SHAPES_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - 0.5) / 0.5)


def blurred(x: torch.Tensor, factor: int) -> torch.Tensor:
    """x (N x C x H x W) average-pooled by `factor` and scaled back up bilinearly: the detail a
    generator that reconstructs through an f = `factor` latent (or is undertrained) loses."""
    if factor == 1:
        return x
    return F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="bilinear", align_corners=False)


def train_shapes_classifier(out: Path = SHAPES_CLASSIFIER, steps: int = 3000, seed: int = 0) -> dict[str, float]:
    """Train `shapes-cnn` on the shapes training split (32 x 32), seeded and single-threaded, on
    images each left sharp or blurred by 2 or 4 (`blurred`, a third each), so that it names the
    shape of a soft sample as it does a sharp one (v1's classifier, trained on sharp images only,
    was at chance on images blurred by 2). Returns its test accuracy on sharp and blurred images."""
    from evals.tasks.image_loaders import image_dataset

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train = image_dataset("shapes", "train", SHAPES_SIZE).tensors
    test = image_dataset("shapes", "test", SHAPES_SIZE).tensors
    net = ShapesCNN()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        idx = torch.randint(len(train[0]), (96,), generator=gen)
        x = torch.cat([blurred(part, f) for part, f in zip(train[0][idx].chunk(3), (1, 2, 4))])
        loss = F.cross_entropy(net(x), train[1][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        stats = {f"test_accuracy_blur{f}": (net(blurred(test[0], f)).argmax(1) == test[1]).float().mean().item() for f in (1, 2, 4)}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out))
    return {"test_accuracy": stats["test_accuracy_blur1"], **stats}


def shapes_classifier() -> ShapesCNN:
    if not SHAPES_CLASSIFIER.is_file():
        raise FileNotFoundError(f"{SHAPES_CLASSIFIER}: make it with `python -m evals.evaluators.class_conditional train-shapes`")
    net = ShapesCNN()
    net.load_state_dict(load_file(str(SHAPES_CLASSIFIER)))
    return net.eval().requires_grad_(False)


# -- FID from features computed once ------------------------------------------------------------
class _Features:
    def __init__(self, options: ClassConditionalOptions):
        from torch_fidelity.utils import create_feature_extractor

        from evals import feature_extractors as fx

        if options.extractor == fx.DIGITS_NAME:
            fx.register()
            self.weights = fx.digits_weights()
        else:
            self.weights = fx.inception_weights(options.inception_weights)
        self.cuda = torch.cuda.is_available()
        self.layer = "features" if options.extractor == fx.DIGITS_NAME else "2048"
        self.net = create_feature_extractor(options.extractor, [self.layer], cuda=self.cuda,
                                            feature_extractor_weights_path=str(self.weights), verbose=False)
        self.batch_size = options.batch_size

    def stats(self, images: torch.Tensor):
        from torch_fidelity.metric_fid import fid_features_to_statistics
        from torch_fidelity.utils import get_featuresdict_from_dataset

        from evals.evaluators.fid import ImageSet

        feats = get_featuresdict_from_dataset(ImageSet(images), self.net, self.batch_size, self.cuda, True, False)
        return fid_features_to_statistics(feats[self.layer])

    @staticmethod
    def fid(a, b) -> float:
        from torch_fidelity.metric_fid import fid_statistics_to_metric

        return float(fid_statistics_to_metric(a, b, False)["frechet_inception_distance"])


def _real(dataset: str, split: str, size: int, root: str | None, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of a split (0: all) as uint8 N x 3 x H x W, and their labels: a random subset of an
    in-memory split (shapes: the first n generated, which is a sample of the same stream), evenly
    spaced ones of a folder dataset (ImageNet's folders are sorted by class)."""
    from evals.evaluators.fid import to_uint8_rgb
    from evals.tasks.image_loaders import image_dataset

    if dataset == "shapes":
        x, y = image_dataset(dataset, split, size, root, n=n).tensors
        return to_uint8_rgb(x), y
    ds = image_dataset(dataset, split, size, root)
    if isinstance(ds, torch.utils.data.TensorDataset):
        x, y = ds.tensors
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n or None]
        return to_uint8_rgb(x[pick]), y[pick]
    idx = torch.linspace(0, len(ds) - 1, min(n, len(ds))).round().long().tolist() if n else range(len(ds))
    pairs = [ds[i] for i in idx]
    return torch.cat([to_uint8_rgb(p[0][None]) for p in pairs]), torch.tensor([int(p[1]) for p in pairs])


def tiny(options: ClassConditionalOptions) -> ClassConditionalOptions:
    return shrunk(options, num_samples=4, batch_size=4, ddim_steps=1, reference_limit=16).model_copy(
        update={"guidance_scales": options.guidance_scales[:1]})


def stand_in(options: ClassConditionalOptions, folder) -> tuple[ClassConditionalOptions, list[str]]:
    """Inception's weights, when absent: the dry run uses `digits-cnn` instead (as the fid evaluator's dry run)."""
    from evals.evaluators.fid import FIDOptions
    from evals.evaluators.fid import stand_in as fid_stand_in

    probe = FIDOptions(extractor=options.extractor, inception_weights=options.inception_weights, num_samples=2)
    changed, missing = fid_stand_in(probe, folder)
    return options.model_copy(update={"extractor": changed.extractor, "inception_weights": changed.inception_weights}), missing


@register("class_conditional", version=3, options=ClassConditionalOptions, metric_names=_names, tiny=tiny, stand_in=stand_in)
def class_conditional(agent, config, options: ClassConditionalOptions) -> Measured:
    from evals import feature_extractors as fx
    from evals.evaluators.fid import noise_like, to_uint8_rgb
    from evals.tasks.image_loaders import HELDOUT

    sampler = capability(agent, ClassConditionalSampler, "class_conditional")
    k, n = sampler.num_classes, options.num_samples
    labels = torch.arange(n) % k
    measured = set(sampler.measured)

    def draw(guidance: float, kind: str) -> tuple[torch.Tensor, float]:
        gen = torch.Generator().manual_seed(options.seed)
        start = time.perf_counter()
        with torch.no_grad():  # uint8 as soon as drawn: 50,000 float images of 256 x 256 would not fit in memory
            out = torch.cat([to_uint8_rgb(sampler.sample_classes(labels[i:i + options.batch_size], gen, guidance, kind, options.ddim_steps).cpu())
                             for i in range(0, n, options.batch_size)])
        return out, (time.perf_counter() - start) / n

    settings: dict[str, tuple[torch.Tensor, float]] = {}
    scales = [s for s in options.guidance_scales if s == 1.0 or "guidance" in measured]
    for s in sorted(set(scales) | {1.0}):
        settings[f"g{s:g}"] = draw(s, "ddim")
    if "ancestral" in measured:
        settings["ancestral"] = draw(1.0, "ancestral")

    size = settings["g1"][0].shape[-1]
    reference, _ = _real(options.dataset, "train", size, options.data_root, options.reference_limit, options.seed)
    heldout, held_labels = _real(options.dataset, HELDOUT[options.dataset], size, options.data_root, n, options.seed + 1)
    noise = (noise_like(reference.float() / 255.0, len(heldout), torch.Generator().manual_seed(options.seed + 2)) * 255).round().to(torch.uint8)

    feats = _Features(options)
    ref = feats.stats(reference)
    metrics: dict[str, float] = {"fid_real_floor": feats.fid(feats.stats(heldout), ref),
                                 "fid_noise_baseline": feats.fid(feats.stats(noise), ref)}
    samples: dict[str, list[float]] = {}
    for name, (images, _) in settings.items():
        metrics[f"fid_{name}"] = feats.fid(feats.stats(images), ref)
    metrics["sample_seconds_ddim"] = settings["g1"][1]
    if "ancestral" in settings:
        metrics["sample_seconds_ancestral"] = settings["ancestral"][1]
        metrics["time_ratio_ancestral"] = settings["ancestral"][1] / settings["g1"][1]
    protocol = {
        "extractor": options.extractor, "extractor_sha256": fx.sha256_file(feats.weights),
        "reference": f"{options.dataset} train split, {len(reference)} images at {size}x{size}",
        "samples": f"{n} per setting, labels i mod {k}, torch.Generator seed {options.seed} for every setting",
        "settings": {name: ("ancestral, all T steps, s = 1" if name == "ancestral" else f"DDIM {options.ddim_steps} steps, guidance s = {name[1:]}")
                     for name in settings},
        "real_floor": f"{len(heldout)} held-out images", "timing": "wall seconds per image of sample_classes at s = 1",
    }
    if options.classifier != "none":
        clf = shapes_classifier()
        with torch.no_grad():
            for name, (images, _) in settings.items():
                correct = (clf(images.float() / 255.0).argmax(1) == labels).float().tolist()
                samples[f"class_acc_{name}"] = correct
                metrics[f"class_acc_{name}"] = statistics.fmean(correct)  # the mean of the samples, in float64
            correct = (clf(heldout.float() / 255.0).argmax(1) == held_labels).float().tolist()
        samples["class_acc_real"] = correct
        metrics["class_acc_real"] = statistics.fmean(correct)
        protocol["classifier"] = f"shapes-cnn, sha256 {fx.sha256_file(SHAPES_CLASSIFIER)}"
    metrics["train_gflops"] = float(getattr(sampler, "training_gflops", float("nan")))
    return Measured(metrics=metrics, samples=samples, protocol=protocol)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evals.evaluators.class_conditional")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train-shapes", help="train shapes-cnn and write its weights")
    p.add_argument("--out", type=Path, default=SHAPES_CLASSIFIER)
    args = parser.parse_args(argv)
    from evals.checkpoint import sha256_file

    stats = train_shapes_classifier(args.out)
    print(f"{args.out}: test accuracy {', '.join(f'{k} {v:.4f}' for k, v in stats.items())}, sha256 {sha256_file(args.out)}")


if __name__ == "__main__":
    main()
