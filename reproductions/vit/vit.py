"""ViT trained from scratch as a classifier (arXiv 2010.11929): the paper module the harness loads.

The model is `model.py` (eq. 1-4); the training recipe is `classify.py` (Section 4.1 and Appendix
B.1). The `Config` defaults are the paper's ViT-B/16 on ImageNet-1k at 224x224 (Table 1 for the
shape, Table 3 for the optimisation): Adam(W) beta2 0.999, batch 4096, base learning rate 3e-3
with 10k warm-up steps and cosine decay, weight decay 0.3, dropout 0.1, 300 epochs, gradient
clipping at norm 1, and the MLP head of pre-training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reproductions.vit import classify
from reproductions.vit.classify import TrainConfig, channels, num_classes
from reproductions.vit.model import ViT


@dataclass
class Config(TrainConfig):
    patch_size: int = 16
    dim: int = 768              # D, the width of every token
    depth: int = 12             # L, encoder blocks
    heads: int = 12
    mlp_dim: int = 3072
    dropout: float = 0.1
    head_hidden: int = 768      # the pre-training head's tanh hidden layer (0: a linear head)
    pool: str = "cls"           # cls: y of eq. (4); mean: the average of the patch tokens


def build(cfg: Config) -> ViT:
    return ViT(cfg.image_size, cfg.patch_size, channels(cfg), num_classes(cfg), cfg.dim, cfg.depth, cfg.heads,
               cfg.mlp_dim, cfg.dropout, cfg.head_hidden, cfg.pool)


def train(cfg: Config, run) -> ViT:
    model = build(cfg).to(run.device)
    run.progress(cfg.steps)
    return classify.fit(model, classify.training_set(cfg), cfg, run)


def dry_run_step(model: ViT, cfg: Config) -> dict[str, float]:
    """One optimisation step on a random batch of 2 images at the config's resolution."""
    x = torch.rand(2, model.channels, cfg.image_size, cfg.image_size)
    y = torch.randint(0, num_classes(cfg), (2,))
    opt = torch.optim.AdamW(classify.param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2))
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {"loss": loss.item()}


data_fingerprint = classify.data_fingerprint
required_data = classify.required_data
