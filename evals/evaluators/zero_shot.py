"""Zero-shot classification from text prompts (CLIP, arXiv 2103.00020, Section 3.1).

Protocol: images of the classes held out from training (`evals.tasks.captioned_shapes`, split
`zero_shot`, a stream disjoint from training, `n` images at the run's `image_size`), classified
among the held-out classes, each given only by its name in prompts. Two prompt modes:

- `single`: one prompt per class, the task's first template (the paper's "A photo of a {label}.");
- `ensemble`: every template of the task per class, combined by the trained thing itself (CLIP:
  the mean of the normalised text embeddings, Section 3.1.4).

The prediction is the arg-max of `zero_shot_logits(images, prompts)` (a `ZeroShotClassifier`).
Each image's correctness per mode is kept in `samples` (`correct_single`, `correct_ensemble`),
so the accuracies `zero_shot_single` and `zero_shot_ensemble` recompute from the record. Chance
is 1 / the number of held-out classes (10: 10%).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import ZeroShotClassifier, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks.captioned_shapes import HELD_OUT, TEMPLATES, class_name, make_captioned_shapes, prompts

MODES = ("single", "ensemble")


class ZeroShotOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Literal["captioned_shapes"] = "captioned_shapes"
    n: int = Field(1000, ge=1)      # zero-shot images
    batch_size: int = Field(250, ge=1)


def derive(result: EvalResult) -> dict[str, float]:
    """Each mode's accuracy is the mean of its images' correctness (`correct_<mode>`)."""
    return {f"zero_shot_{name.removeprefix('correct_')}": sum(xs) / len(xs) for name, xs in result.samples.items()}


def tiny(options: ZeroShotOptions) -> ZeroShotOptions:
    """A dry run's budget: 4 images."""
    return shrunk(options, n=4, batch_size=4)


@register("zero_shot", version=1, options=ZeroShotOptions, derive=derive, tiny=tiny,
          metric_names=lambda o: [f"zero_shot_{m}" for m in MODES])
def zero_shot(agent, config, options: ZeroShotOptions) -> Measured:
    model = capability(agent, ZeroShotClassifier, "zero_shot")
    data = make_captioned_shapes(options.n, config.image_size, split="zero_shot")
    texts = {"single": prompts(HELD_OUT, TEMPLATES[:1]), "ensemble": prompts(HELD_OUT, TEMPLATES)}
    correct: dict[str, list[float]] = {m: [] for m in MODES}
    with torch.no_grad():
        for start in range(0, len(data), options.batch_size):
            x = data.images[start:start + options.batch_size]
            y = data.labels[start:start + options.batch_size]
            for mode in MODES:
                scores = model.zero_shot_logits(x, texts[mode]).float().cpu()
                if scores.shape != (len(x), len(HELD_OUT)):
                    raise ValueError(f"zero_shot: zero_shot_logits gave shape {tuple(scores.shape)}, "
                                     f"expected {(len(x), len(HELD_OUT))}")
                correct[mode] += (scores.argmax(-1) == y).float().tolist()
    return Measured(
        metrics={f"zero_shot_{m}": sum(c) / len(c) for m, c in correct.items()},
        samples={f"correct_{m}": c for m, c in correct.items()},
        protocol={
            "dataset": options.dataset,
            "split": "zero_shot",
            "n": len(data),
            "resolution": config.image_size,
            "classes": [class_name(k) for k in HELD_OUT],
            "chance": 1.0 / len(HELD_OUT),
            "templates": {"single": list(TEMPLATES[:1]), "ensemble": list(TEMPLATES)},
            "data_fingerprint": data.fingerprint(),
            "prediction": "arg-max of zero_shot_logits over the held-out classes",
        },
    )
