"""Image classification accuracy on a held-out split.

Protocol: the dataset the run's config names (`dataset`, `image_size`, and `data_root` for the
datasets on disk), its held-out split (digits and shapes: `test`; CIFAR-10: `test`; ImageNet:
`val`, resized to size/0.875 and centre-cropped), no test-time augmentation, the arg-max of the
trained thing's `predict_logits(images)` (images float N x C x H x W in [0, 1]). Top-1 accuracy,
and top-k (k = 5) where there are more than k classes. Every image's correctness is kept in
`samples`, so the accuracy recomputes from the record.

A trained thing with more than one classifier (MAE: the fine-tuned model and the linear probe on
the pre-trained features) names the others' methods: `method: probe_logits, prefix: linear_`
reports `linear_accuracy` from `agent.probe_logits`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader

from evals.contract import Classifier, ProbedClassifier, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks.image_loaders import HELDOUT, SHAPES_DEFAULT_N, fingerprint, image_dataset


class ClassificationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: str | None = None     # None: the dataset's held-out split
    n: int = Field(0, ge=0)      # shapes: images drawn for the split (0: 2,000); others: the first n (0: all)
    batch_size: int = Field(256, ge=1)
    top_k: int = Field(5, ge=2)
    method: Literal["predict_logits", "probe_logits"] = "predict_logits"
    prefix: str = ""             # prepended to the metric and sample names


def derive(result: EvalResult) -> dict[str, float]:
    """Each accuracy is the mean of its images' correctness (`<prefix>correct`, `<prefix>correct_top<k>`)."""
    out = {}
    for name, xs in result.samples.items():
        pre, _, rest = name.partition("correct")
        out[f"{pre}accuracy" if not rest else f"{pre}{rest.lstrip('_')}_accuracy"] = sum(xs) / len(xs)
    return out


def tiny(options: ClassificationOptions) -> ClassificationOptions:
    """A dry run's budget: the first 4 images of the split."""
    return shrunk(options, n=4, batch_size=4)


@register("classification", version=1, options=ClassificationOptions, derive=derive, tiny=tiny,
          metric_names=lambda o: [f"{o.prefix}accuracy", f"{o.prefix}top{o.top_k}_accuracy"])
def classification(agent, config, options: ClassificationOptions) -> Measured:
    wanted = ProbedClassifier if options.method == "probe_logits" else Classifier
    if not hasattr(config, "dataset") and not isinstance(agent, wanted):
        # no image task (a language model in a tier that also trains a classifier, as Muon's): not scored, as lm_loss
        return Measured(metrics={},
                        protocol={"scored": False, "reason": f"{type(agent).__name__} is not an image classifier"})
    split = options.split or HELDOUT[config.dataset]
    ds = image_dataset(config.dataset, split, config.image_size, getattr(config, "data_root", None), options.n)
    loader = DataLoader(ds, batch_size=options.batch_size, shuffle=False, num_workers=getattr(config, "workers", 0)
                        if not isinstance(ds, torch.utils.data.TensorDataset) else 0)
    predict = getattr(capability(agent, wanted, "classification"), options.method)
    top1, topk, n_classes = [], [], 0
    for x, y in loader:
        logits = predict(x).float().cpu()
        n_classes = logits.shape[1]
        top1 += (logits.argmax(-1) == y).float().tolist()
        if n_classes > options.top_k:
            topk += (logits.topk(options.top_k, dim=-1).indices == y[:, None]).any(-1).float().tolist()
    if not top1:
        raise ValueError(f"classification: the {config.dataset} {split} split is empty")
    pre = options.prefix
    metrics = {f"{pre}accuracy": sum(top1) / len(top1)}
    samples = {f"{pre}correct": top1}
    if topk:
        metrics[f"{pre}top{options.top_k}_accuracy"] = sum(topk) / len(topk)
        samples[f"{pre}correct_top{options.top_k}"] = topk
    n_requested = options.n or (SHAPES_DEFAULT_N[split] if config.dataset == "shapes" else 0)
    return Measured(metrics=metrics,
        samples=samples,
        protocol={
            "dataset": config.dataset,
            "split": split,
            "n": len(top1),
            "n_requested": n_requested or "all",
            "resolution": config.image_size,
            "classes": n_classes,
            "data_fingerprint": fingerprint(ds),
            "preprocessing": "resize to size/0.875, centre crop" if config.dataset == "imagenet" else "none (images in [0, 1])",
            "prediction": f"arg-max of {options.method}, no test-time augmentation",
        },
    )
