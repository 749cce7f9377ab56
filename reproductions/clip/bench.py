"""CLIP benchmarks: image-text pairs per second of our CLIP (our ViT and GPT, Figure 3's loss)
against open_clip's CLIP and ClipLoss at the same mini-tier shape (same batch, same process,
interleaved repeats, the median of each), for a training step (forward, symmetric loss, backward,
AdamW) and for embedding a batch of images and captions."""

from __future__ import annotations

import torch

from evals.tasks.captioned_shapes import make_captioned_shapes, tokenize
from reproductions.clip.clip import CLIP, Config
from reproductions.clip.open_clip_baseline import OpenClipAgent
from reproductions.common.bench_timing import median_seconds, step_and_inference_timers

REPEATS = 5


def _timers(model, x: torch.Tensor, t: torch.Tensor):
    return step_and_inference_timers(model, lambda: model.training_loss(x, t),
                                     lambda: (model.encode_image(x), model.encode_text(t)))


def run(cfg: Config) -> list[dict]:
    torch.manual_seed(0)
    data = make_captioned_shapes(cfg.batch_size, cfg.image_size, split="train")
    x, t = data.images, tokenize(data.captions)
    timers = {"ours": _timers(CLIP(cfg), x, t), "open_clip": _timers(OpenClipAgent(cfg), x, t)}
    seconds = median_seconds(timers, REPEATS)
    rows = []
    shape = f"mini CLIP ({cfg.image_size}px, patch {cfg.patch_size}, widths {cfg.vision_width}/{cfg.text_width})"
    for i, what in enumerate(("train step", "embed images and captions")):
        ours = cfg.batch_size / seconds[("ours", i)]
        base = cfg.batch_size / seconds[("open_clip", i)]
        rows.append({"benchmark": f"{what}, {shape}, batch {cfg.batch_size}", "ours": ours, "baseline": base,
                     "unit": "pairs/s (vs open_clip CLIP)", "ratio": ours / base})
    return rows
