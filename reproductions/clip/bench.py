"""CLIP benchmarks: image-text pairs per second of our CLIP (our ViT and GPT, Figure 3's loss)
against open_clip's CLIP and ClipLoss at the same mini-tier shape (same batch, same process,
interleaved repeats, the median of each), for a training step (forward, symmetric loss, backward,
AdamW) and for embedding a batch of images and captions."""

from __future__ import annotations

import statistics
import time

import torch

from evals.tasks.captioned_shapes import make_captioned_shapes, tokenize
from reproductions.clip.clip import CLIP, Config
from reproductions.clip.open_clip_baseline import OpenClipAgent

REPEATS = 5


def _timers(model, x: torch.Tensor, t: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> float:
        start = time.perf_counter()
        loss = model.training_loss(x, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    @torch.no_grad()
    def embed() -> float:
        model.eval()
        start = time.perf_counter()
        model.encode_image(x), model.encode_text(t)
        model.train()
        return time.perf_counter() - start

    return train_step, embed


def run(cfg: Config) -> list[dict]:
    torch.manual_seed(0)
    data = make_captioned_shapes(cfg.batch_size, cfg.image_size, split="train")
    x, t = data.images, tokenize(data.captions)
    timers = {"ours": _timers(CLIP(cfg), x, t), "open_clip": _timers(OpenClipAgent(cfg), x, t)}
    times = {(who, i): [] for who in timers for i in range(2)}
    for r in range(REPEATS + 1):  # the first round warms up
        for who, fns in timers.items():
            for i, fn in enumerate(fns):
                dt = fn()
                if r:
                    times[(who, i)].append(dt)
    rows = []
    shape = f"mini CLIP ({cfg.image_size}px, patch {cfg.patch_size}, widths {cfg.vision_width}/{cfg.text_width})"
    for i, what in enumerate(("train step", "embed images and captions")):
        ours = cfg.batch_size / statistics.median(times[("ours", i)])
        base = cfg.batch_size / statistics.median(times[("open_clip", i)])
        rows.append({"benchmark": f"{what}, {shape}, batch {cfg.batch_size}", "ours": ours, "baseline": base,
                     "unit": "pairs/s (vs open_clip CLIP)", "ratio": ours / base})
    return rows
