"""How well samples follow a spatial condition (ControlNet): edges extracted from each sample with
OpenCV's Canny (evals.tasks.edges) against the condition's edges, F1 with a 1-pixel tolerance, for
the controlled model and for its base model alone on the same labels and noise; and the FID of both
sample sets (the class_conditional evaluator's features, against the dataset's training split).

Metrics: `edge_f1` (controlled), `edge_f1_base` (the base model, the unconditioned reference),
`edge_f1_real` (the real images the conditions came from: the ceiling), `fid_control`, `fid_base`,
`fid_real_floor`. Per-image F1 values are kept as samples, so the F1 means are checkable from the record.
"""

from __future__ import annotations

import statistics
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import ConditionedSampler, capability
from evals.evaluators import Measured, register, shrunk


class ConditionFidelityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Literal["shapes"] = "shapes"
    extractor: Literal["digits-cnn", "inception-v3-compat"] = "digits-cnn"
    inception_weights: str | None = None
    num_samples: int = Field(ge=2)
    batch_size: int = Field(250, ge=1)
    ddim_steps: int = Field(50, ge=1)
    tolerance: int = Field(1, ge=0)
    reference_limit: int = Field(0, ge=0)
    seed: int = 0


def tiny(options: ConditionFidelityOptions) -> ConditionFidelityOptions:
    return shrunk(options, num_samples=4, batch_size=4, ddim_steps=2, reference_limit=16)


@register("condition_fidelity", version=1, options=ConditionFidelityOptions, tiny=tiny,
          metric_names=lambda o: ["edge_f1", "edge_f1_base", "edge_f1_real", "fid_control", "fid_base", "fid_real_floor"])
def condition_fidelity(agent, config, options: ConditionFidelityOptions) -> Measured:
    from evals.evaluators.class_conditional import ClassConditionalOptions, _Features, _real
    from evals.evaluators.fid import to_uint8_rgb
    from evals.tasks.edges import canny_edges, edge_f1

    sampler = capability(agent, ConditionedSampler, "condition_fidelity")
    conds, labels, real = sampler.held_out_conditions(options.num_samples)
    n, b = len(labels), options.batch_size

    def draw(control: bool) -> torch.Tensor:
        gen = torch.Generator().manual_seed(options.seed)
        with torch.no_grad():
            return torch.cat([to_uint8_rgb(sampler.sample_conditioned(conds[i:i + b], labels[i:i + b], gen, options.ddim_steps, control).cpu())
                              for i in range(0, n, b)])

    controlled, base = draw(True), draw(False)
    cond_edges = (conds > 0.5).float()
    f1 = {name: edge_f1(canny_edges(images), cond_edges, options.tolerance)
          for name, images in (("edge_f1", controlled), ("edge_f1_base", base), ("edge_f1_real", to_uint8_rgb(real)))}
    feats = _Features(ClassConditionalOptions(extractor=options.extractor, inception_weights=options.inception_weights,
                                              num_samples=2, batch_size=b))
    size = controlled.shape[-1]
    reference, _ = _real(options.dataset, "train", size, None, options.reference_limit, options.seed)
    ref = feats.stats(reference)
    metrics = {k: statistics.fmean(v.tolist()) for k, v in f1.items()}  # the mean of the samples, in float64
    metrics |= {"fid_control": feats.fid(feats.stats(controlled), ref), "fid_base": feats.fid(feats.stats(base), ref),
                "fid_real_floor": feats.fid(feats.stats(to_uint8_rgb(real)), ref)}
    return Measured(metrics=metrics, samples={k: v.tolist() for k, v in f1.items()}, protocol={
        "conditions": f"{n} held-out conditions from agent.held_out_conditions, their labels",
        "samples": f"DDIM {options.ddim_steps} steps, torch.Generator seed {options.seed} for both the controlled and the base draws",
        "edges": f"OpenCV Canny (100, 200) on the grey sample, F1 against the condition's edges with {options.tolerance}-pixel tolerance",
        "fid": f"{options.extractor} features against {len(reference)} {options.dataset} training images",
    })
