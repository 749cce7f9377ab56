"""Zero-shot classification from text prompts (CLIP, arXiv 2103.00020, Section 3.1).

Protocol, `dataset: captioned_shapes`: images of the classes held out from training
(`evals.tasks.captioned_shapes`, split `zero_shot`, a stream disjoint from training, `n` images at
the run's `image_size`), classified among the held-out classes, each given only by its name in
prompts. `dataset: imagenet`: ImageNet-1k's validation images under the run's `data_root` (the
first `n`, 0: all 50,000; resized to size/0.875 and centre-cropped), classified among the 1,000
class names with the prompt templates OpenAI released with CLIP (open_clip's `zero_shot_metadata`).
Two prompt modes:

- `single`: one prompt per class, the task's first template (captioned shapes: "one {class}";
  ImageNet: the paper's default, "a photo of a {label}.");
- `ensemble`: every template of the task per class (ImageNet: the 80), combined by the trained
  thing itself (CLIP: the mean of the normalised text embeddings, Section 3.1.4).

The prediction is the arg-max of `zero_shot_logits(images, prompts)` (a `ZeroShotClassifier`).
Each image's correctness per mode is kept in `samples` (`correct_single`, `correct_ensemble`),
so the accuracies `zero_shot_single` and `zero_shot_ensemble` recompute from the record. Chance
is 1 / the number of classes (the held-out shapes: 10%).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader

from evals.contract import ZeroShotClassifier, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks.captioned_shapes import HELD_OUT, TEMPLATES, class_name, make_captioned_shapes, prompts
from evals.tasks.image_loaders import fingerprint, image_dataset

MODES = ("single", "ensemble")
IMAGENET_SINGLE = "a photo of a {c}."  # the paper's default prompt (Section 3.1.4)


class ZeroShotOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Literal["captioned_shapes", "imagenet"] = "captioned_shapes"
    n: int = Field(1000, ge=0)      # zero-shot images (imagenet: the first n of the split, 0: all)
    batch_size: int = Field(250, ge=1)
    workers: int = Field(8, ge=0)   # imagenet: loader processes
    classes: int = Field(0, ge=0)   # imagenet: the first k classes only (0: all 1,000; a dry run's budget)


def derive(result: EvalResult) -> dict[str, float]:
    """Each mode's accuracy is the mean of its images' correctness (`correct_<mode>`)."""
    return {f"zero_shot_{name.removeprefix('correct_')}": sum(xs) / len(xs) for name, xs in result.samples.items()}


def tiny(options: ZeroShotOptions) -> ZeroShotOptions:
    """A dry run's budget: 4 images (ImageNet: among its first 10 classes)."""
    return shrunk(options, n=4, batch_size=4, workers=0, classes=10)


def _captioned_shapes(config, options: ZeroShotOptions):
    if options.n < 1:
        raise ValueError("zero_shot: captioned_shapes needs n >= 1 images")
    data = make_captioned_shapes(options.n, config.image_size, split="zero_shot")
    texts = {"single": prompts(HELD_OUT, TEMPLATES[:1]), "ensemble": prompts(HELD_OUT, TEMPLATES)}
    batches = [(data.images[i:i + options.batch_size], data.labels[i:i + options.batch_size])
               for i in range(0, len(data), options.batch_size)]
    protocol = {"dataset": options.dataset, "split": "zero_shot", "n": len(data), "resolution": config.image_size,
                "classes": [class_name(k) for k in HELD_OUT], "chance": 1.0 / len(HELD_OUT),
                "templates": {"single": list(TEMPLATES[:1]), "ensemble": list(TEMPLATES)},
                "data_fingerprint": data.fingerprint(),
                "prediction": "arg-max of zero_shot_logits over the held-out classes"}
    return batches, texts, len(HELD_OUT), protocol


def _imagenet(config, options: ZeroShotOptions):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    names = list(IMAGENET_CLASSNAMES)[:options.classes or None]
    templates = [t("{c}") for t in OPENAI_IMAGENET_TEMPLATES]
    texts = {"single": [[IMAGENET_SINGLE.format(c=c)] for c in names],
             "ensemble": [[t.replace("{c}", c) for t in templates] for c in names]}
    ds = image_dataset("imagenet", "val", config.image_size, config.data_root, options.n)
    batches = DataLoader(ds, batch_size=options.batch_size, shuffle=False, num_workers=options.workers)
    protocol = {"dataset": options.dataset, "split": "val", "n": len(ds), "n_requested": options.n or "all",
                "resolution": config.image_size, "classes": f"{len(names)} ImageNet-1k class names (open_clip's zero_shot_metadata)",
                "chance": 1.0 / len(names), "templates": {"single": [IMAGENET_SINGLE], "ensemble": templates},
                "data_fingerprint": fingerprint(ds), "preprocessing": "resize to size/0.875, centre crop",
                "prediction": f"arg-max of zero_shot_logits over the {len(names)} classes"}
    return batches, texts, len(names), protocol


@register("zero_shot", version=1, options=ZeroShotOptions, derive=derive, tiny=tiny,
          metric_names=lambda o: [f"zero_shot_{m}" for m in MODES])
def zero_shot(agent, config, options: ZeroShotOptions) -> Measured:
    model = capability(agent, ZeroShotClassifier, "zero_shot")
    batches, texts, n_classes, protocol = (_imagenet if options.dataset == "imagenet" else _captioned_shapes)(config, options)
    correct: dict[str, list[float]] = {m: [] for m in MODES}
    with torch.no_grad():
        for x, y in batches:
            for mode in MODES:
                scores = model.zero_shot_logits(x, texts[mode]).float().cpu()
                if scores.shape != (len(x), n_classes):
                    raise ValueError(f"zero_shot: zero_shot_logits gave shape {tuple(scores.shape)}, "
                                     f"expected {(len(x), n_classes)}")
                correct[mode] += (scores.argmax(-1) == y).float().tolist()
    if not correct["single"]:
        raise ValueError(f"zero_shot: the {options.dataset} {protocol['split']} split is empty")
    return Measured(
        metrics={f"zero_shot_{m}": sum(c) / len(c) for m, c in correct.items()},
        samples={f"correct_{m}": c for m, c in correct.items()},
        protocol=protocol,
    )
