"""The peer arm: open_clip's CLIP model (`open_clip.model.CLIP`: its VisionTransformer and causal
TextTransformer with arg-max [EOS] pooling) trained with open_clip's `ClipLoss` at the same small
configuration, on the same data, batches, optimiser and steps as `clip.py`. As open_clip's
training loop does, the log logit scale is clamped to [0, log 100] after every step.

Zero-shot classification uses the paper's method on open_clip's encoders (`ContrastiveZeroShot`:
the same prompts, averaged normalised text embeddings). Images are mapped from [0, 1] to [-1, 1]
as our ViT does.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from open_clip import ClipLoss
from open_clip.model import CLIP as OpenCLIP
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from evals.tasks.captioned_shapes import CONTEXT_LENGTH, PAD, VOCAB, WORD_ID
from reproductions.clip.clip import Config, ContrastiveZeroShot, TiedSafetensors, dry_run_step, fit

__all__ = ["Config", "OpenClipAgent", "build", "train", "dry_run_step"]


class OpenClipAgent(ContrastiveZeroShot, TiedSafetensors):
    def __init__(self, cfg: Config):
        super().__init__()
        vision = CLIPVisionCfg(layers=cfg.vision_layers, width=cfg.vision_width,
                               head_width=cfg.vision_width // cfg.vision_heads, mlp_ratio=4.0,
                               patch_size=cfg.patch_size, image_size=cfg.image_size)
        text = CLIPTextCfg(context_length=CONTEXT_LENGTH, vocab_size=len(VOCAB), width=cfg.text_width,
                           heads=cfg.text_heads, layers=cfg.text_layers, pad_id=WORD_ID[PAD])
        self.model = OpenCLIP(cfg.embed_dim, vision, text, init_logit_scale=math.log(1.0 / cfg.init_temperature))
        self.loss = ClipLoss()
        self.max_log_scale = math.log(cfg.max_logit_scale)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images * 2.0 - 1.0)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def training_loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.loss(self.model.encode_image(images * 2.0 - 1.0, normalize=True),
                         self.model.encode_text(tokens, normalize=True), self.logit_scale())

    @torch.no_grad()
    def after_step(self) -> None:
        self.model.logit_scale.clamp_(0, self.max_log_scale)  # open_clip's train_one_epoch

    def log_values(self) -> dict[str, float]:
        return {"logit_scale": self.logit_scale().item()}


def build(cfg: Config) -> OpenClipAgent:
    return OpenClipAgent(cfg)


def train(cfg: Config, run) -> nn.Module:
    return fit(build(cfg).to(run.device), cfg, run)
