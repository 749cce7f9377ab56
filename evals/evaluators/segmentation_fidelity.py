"""How well images generated from semantic segmentations follow them, and their quality (ControlNet,
arXiv 2302.05543, Table 2 "semantic segmentation label reconstruction" and Table 3's FID).

Protocol:
- the first `num_samples` pairs (0: all) of ADE20K's `split` under the run's `data_root`
  (evals.tasks.ade20k: short side resized to the resolution, centre crop), each with its prompt
  (the run's `captions` file, else the classes present);
- the model draws one image per label map with `agent.sample_from_segmentation` (DDIM `ddim_steps`,
  classifier-free guidance `guidance`), from one torch.Generator seeded with `seed`, in batches;
- OneFormer (transformers' `OneFormerForUniversalSegmentation`, ADE20K's 150 classes, task "the task
  is semantic", loaded from the local folder `segmenter` in safetensors) re-segments each generated
  image and, for the ceiling, each real image; `segmentation_iou` is the mean over images of the
  per-image mean IoU against the conditioning label map (evals.tasks.ade20k.mean_iou, label 0 left
  out), `segmentation_iou_real` the same of the real images (Table 2's 0.58 row);
- `fid`: FID of the generated images against the real images of the same pairs (torch-fidelity's
  Inception, or the extractor named).

Per-image IoUs are the samples, so both IoU metrics are the means of their samples (checkable from the
record). Images whose label map is all 0 ("other") have no IoU and are counted in the protocol.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import SegmentationSampler, capability
from evals.evaluators import Measured, register, shrunk

METRICS = ["segmentation_iou", "segmentation_iou_real", "fid"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class SegmentationFidelityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    segmenter: str = "data/controlnet/oneformer_ade20k_swin_large"   # transformers folder, safetensors
    split: Literal["training", "validation"] = "validation"
    num_samples: int = Field(0, ge=0)                # 0: the whole split
    batch_size: int = Field(8, ge=1)
    ddim_steps: int = Field(20, ge=1)
    guidance: float = Field(9.0, ge=0.0)
    image_size: int | None = Field(None, ge=8)       # None: the run's config.image_size
    fid: bool = True
    extractor: Literal["digits-cnn", "inception-v3-compat"] = "inception-v3-compat"
    inception_weights: str | None = None
    seed: int = 0


class Segmenter:
    """OneFormer from a local folder, semantic task; `__call__` maps images N x 3 x H x W in [0, 1]
    to ADE20K label maps N x H x W (1..150)."""

    def __init__(self, folder: str, device: torch.device):
        from transformers import AutoTokenizer, OneFormerForUniversalSegmentation, OneFormerImageProcessor

        self.model = OneFormerForUniversalSegmentation.from_pretrained(folder, use_safetensors=True).to(device).eval()
        if self.model.config.num_labels != 150:
            raise ValueError(f"segmentation_fidelity: {folder} predicts {self.model.config.num_labels} classes, "
                             f"not ADE20K's 150")
        tok = AutoTokenizer.from_pretrained(folder)
        length = self.model.config.task_seq_len
        enc = tok(["the task is semantic"], padding="max_length", max_length=length, truncation=True)
        # as OneFormerProcessor does: the padding's ids set to 0 (ids times the attention mask)
        self.task = (torch.tensor(enc["input_ids"]) * torch.tensor(enc["attention_mask"])).to(device)
        pre = Path(folder) / "preprocessor_config.json"
        cfg = json.loads(pre.read_text()) if pre.is_file() else {}
        mean, std = cfg.get("image_mean", IMAGENET_MEAN), cfg.get("image_std", IMAGENET_STD)
        scale = 255.0 if max(mean) > 1 else 1.0          # OneFormer's configs give them in 0..255
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) / scale
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) / scale
        size = cfg.get("size", 512)                        # an int or {"shortest_edge": ...}
        self.short_side = int(size.get("shortest_edge", 512) if isinstance(size, dict) else size)
        self.post = OneFormerImageProcessor()            # the library's semantic post-processing
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        x = images.to(self.device).float()
        if min(h, w) != self.short_side:
            s = self.short_side / min(h, w)
            x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
        out = self.model(pixel_values=(x - self.mean) / self.std, task_inputs=self.task.expand(len(x), -1))
        maps = self.post.post_process_semantic_segmentation(out, target_sizes=[(h, w)] * len(x))
        return torch.stack([m if torch.is_tensor(m) else m["segmentation"] for m in maps]).cpu().long() + 1


def tiny(options: SegmentationFidelityOptions) -> SegmentationFidelityOptions:
    return shrunk(options, num_samples=3, batch_size=3, ddim_steps=2, image_size=64)


def stand_in(options: SegmentationFidelityOptions, folder) -> tuple[SegmentationFidelityOptions, list[str]]:
    """OneFormer's weights, when absent: a tiny random OneFormer the project builds (the IoU is then
    meaningless, the code path is the real one); Inception's weights: the project's digits-cnn."""
    from evals import feature_extractors as fx
    from evals.tasks.ade20k_stand_ins import write_tiny_oneformer

    update, missing = {}, []
    seg = Path(options.segmenter)
    if not ((seg / "config.json").is_file() and (seg / "model.safetensors").is_file()):
        missing.append(f"segmentation_fidelity: no OneFormer under {seg} (config.json, model.safetensors and the "
                       f"tokenizer of the Hugging Face repository shi-labs/oneformer_ade20k_swin_large)")
        update["segmenter"] = str(write_tiny_oneformer(Path(folder) / "oneformer"))
    if options.fid and options.extractor == fx.INCEPTION_NAME:
        try:
            fx.inception_weights(options.inception_weights)
        except (FileNotFoundError, ValueError) as e:
            update.update(extractor=fx.DIGITS_NAME, inception_weights=None)
            missing.append(f"segmentation_fidelity: {e}")
    return options.model_copy(update=update), missing


@register("segmentation_fidelity", version=1, options=SegmentationFidelityOptions, tiny=tiny, stand_in=stand_in,
          metric_names=lambda o: METRICS if o.fid else METRICS[:2])
def segmentation_fidelity(agent, config, options: SegmentationFidelityOptions) -> Measured:
    from evals.evaluators.class_conditional import ClassConditionalOptions, _Features
    from evals.evaluators.fid import to_uint8_rgb
    from evals.tasks import ade20k

    sampler = capability(agent, SegmentationSampler, "segmentation_fidelity")
    size = options.image_size or config.image_size
    captions = ade20k.load_captions(getattr(config, "captions", ""))
    names = ade20k.names(config.data_root, options.split, options.num_samples)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    segment = Segmenter(options.segmenter, device)
    gen = torch.Generator().manual_seed(options.seed)
    samples: dict[str, list[float]] = {"segmentation_iou": [], "segmentation_iou_real": []}
    generated, real, unscored = [], [], 0
    b = options.batch_size
    for i in range(0, len(names), b):
        pairs = [ade20k.read_pair(config.data_root, options.split, n, size, captions) for n in names[i:i + b]]
        labels = torch.stack([p.labels for p in pairs])
        images = torch.stack([p.image for p in pairs])
        with torch.no_grad():
            drawn = sampler.sample_from_segmentation(labels, [p.prompt for p in pairs], gen, options.ddim_steps,
                                                     options.guidance).float().cpu().clamp(0, 1)
        for key, predicted in (("segmentation_iou", segment(drawn)), ("segmentation_iou_real", segment(images))):
            for pred, target in zip(predicted, labels):
                iou = ade20k.mean_iou(pred, target)
                if iou == iou:
                    samples[key].append(iou)
                elif key == "segmentation_iou":
                    unscored += 1
        if options.fid:
            generated.append(to_uint8_rgb(drawn))
            real.append(to_uint8_rgb(images))
    if not samples["segmentation_iou"]:
        raise ValueError(f"segmentation_fidelity: no scorable label map among {len(names)} {options.split} pairs")
    metrics = {k: statistics.fmean(v) for k, v in samples.items()}
    protocol = {
        "data": f"ADE20K {options.split} under {config.data_root}: {len(names)} pairs at {size}x{size} "
                f"(short side resized, centre crop); prompts from {'captions' if captions else 'the classes present'}",
        "samples": f"DDIM {options.ddim_steps} steps, guidance {options.guidance}, torch.Generator seed {options.seed}",
        "segmenter": f"OneFormer from {options.segmenter} (semantic task), ADE20K ids + 1; mean IoU per image over the "
                     f"classes in the condition or the prediction, label 0 left out",
        "unscored": unscored,
    }
    if options.fid:
        feats = _Features(ClassConditionalOptions(extractor=options.extractor, inception_weights=options.inception_weights,
                                                  num_samples=2, batch_size=b))
        metrics["fid"] = feats.fid(feats.stats(torch.cat(generated)), feats.stats(torch.cat(real)))
        protocol["fid"] = f"{options.extractor} features, the {len(names)} generated images against their real images"
    return Measured(metrics=metrics, samples=samples, protocol=protocol)
