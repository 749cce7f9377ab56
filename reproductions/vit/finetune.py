"""ViT pre-trained at one resolution, then fine-tuned at a higher one (arXiv 2010.11929, Section 3.2
and Appendix B.1.1): the module of the full tier, whose published number (Table 5, ViT-B/16
pre-trained on ImageNet-1k: 77.91% top-1) is after this step.

Section 3.2, "Fine-tuning and higher resolution": the pre-trained prediction head is replaced by a
zero-initialised D x K linear layer; the patch size stays, so a larger image gives a longer
sequence, and the learned position embeddings are 2-D interpolated to the new grid of patches.
Appendix B.1.1 and Table 4: SGD with momentum 0.9, batch 512, no weight decay, gradient clipping at
global norm 1, a short linear warm-up then cosine decay, 20,000 steps for ImageNet at 384x384.

`Config.image_size` is the resolution the finished model sees (the fine-tuning one, so the
evaluators score at it); `pretrain_image_size` is the pre-training one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from reproductions.common.training import restore, snapshot
from reproductions.vit import classify, vit
from reproductions.vit.classify import num_classes
from reproductions.vit.model import ViT

PHASE = "finetune_"


@dataclass
class Config(vit.Config):
    image_size: int = 384               # the fine-tuning (and evaluation) resolution, Table 4 for ImageNet
    pretrain_image_size: int = 224
    finetune_steps: int = 20_000        # Table 4, ImageNet
    finetune_batch_size: int = 512     # Appendix B.1.1
    finetune_lr: float = 0.03           # one value of Table 4's grid {0.003, 0.01, 0.03, 0.06}
    finetune_warmup_steps: int = 500
    momentum: float = 0.9


def pretrain_config(cfg: Config) -> vit.Config:
    """The pre-training phase's config: the ViT's own fields, at the pre-training resolution."""
    names = {f.name for f in dataclasses.fields(vit.Config)}
    return vit.Config(**{**{k: v for k, v in dataclasses.asdict(cfg).items() if k in names},
                         "image_size": cfg.pretrain_image_size})


def finetune_config(cfg: Config) -> vit.Config:
    """The fine-tuning phase's data and schedule, in the fields `classify` reads."""
    return dataclasses.replace(pretrain_config(cfg), image_size=cfg.image_size, steps=cfg.finetune_steps,
                               batch_size=cfg.finetune_batch_size, lr=cfg.finetune_lr,
                               warmup_steps=cfg.finetune_warmup_steps, weight_decay=0.0)


def interpolate_positions(pos_embed: torch.Tensor, old_grid: int, new_grid: int) -> torch.Tensor:
    """Section 3.2: the class token's embedding kept, the patch embeddings (1 x old_grid^2 x D, row-major)
    2-D interpolated to new_grid x new_grid. Linear in each axis with the corners mapped to the corners,
    as the reference code's order-1 `scipy.ndimage.zoom`."""
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bilinear", align_corners=True)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim)], dim=1)


@torch.no_grad()
def prepare_for_finetuning(model: ViT, image_size: int, classes: int) -> ViT:
    """Section 3.2 in place: position embeddings interpolated to `image_size`, and a new zero-initialised
    linear head for `classes` classes."""
    if image_size % model.patch_size:
        raise ValueError(f"ViT: fine-tuning image_size {image_size} is not a multiple of patch_size {model.patch_size}")
    old_grid, new_grid = model.image_size // model.patch_size, image_size // model.patch_size
    model.pos_embed = nn.Parameter(interpolate_positions(model.pos_embed.detach(), old_grid, new_grid))
    model.image_size, model.num_patches = image_size, new_grid * new_grid
    model.head = nn.Linear(model.dim, classes).to(model.pos_embed.device)
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    return model


def build(cfg: Config) -> ViT:
    """The finished model's shape: the pre-training ViT made ready for fine-tuning."""
    return prepare_for_finetuning(vit.build(pretrain_config(cfg)), cfg.image_size, num_classes(cfg))


def finetune(model: ViT, cfg: Config, run, step_offset: int) -> ViT:
    """Appendix B.1.1: SGD with momentum, no weight decay, clipped gradients, warm-up then cosine decay.
    (The pre-training loop, `classify.fit`, is the Adam recipe; this is its SGD counterpart.)"""
    ft = finetune_config(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=ft.lr, momentum=cfg.momentum)
    parts = {"model": model, "opt": opt}
    step = 0
    resumed = run.resume_state()
    if resumed is not None and resumed["phase"] == PHASE:
        step = restore(resumed["parts"], parts)["step"] - step_offset
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in classify.batches(classify.training_set(ft), ft, run.seed, step, run.device):
        if step >= ft.steps:
            break
        lr = classify.learning_rate(step, ft.lr, ft.warmup_steps, ft.steps, ft.lr_decay)
        for group in opt.param_groups:
            group["lr"] = lr
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), ft.grad_clip)
        opt.step()
        step += 1
        loss_sum, correct, seen = loss_sum + loss.item() * len(y), correct + (logits.argmax(-1) == y).sum().item(), seen + len(y)
        if step % ft.log_every == 0 or step == ft.steps:
            run.log(step_offset + step, **{f"{PHASE}loss": loss_sum / seen, f"{PHASE}train_accuracy": correct / seen,
                                           f"{PHASE}lr": lr})
            loss_sum, correct, seen = 0.0, 0, 0
        run.maybe_checkpoint(step_offset + step, lambda: {"phase": PHASE, "parts": snapshot(parts, step=step_offset + step)})
        run.advance()
    return model


def train(cfg: Config, run) -> ViT:
    pre = pretrain_config(cfg)
    model = vit.build(pre).to(run.device)
    run.progress(pre.steps + cfg.finetune_steps)
    resumed = run.resume_state()
    if resumed is None or resumed["phase"] != PHASE:
        classify.fit(model, classify.training_set(pre), pre, run)
    prepare_for_finetuning(model, cfg.image_size, num_classes(cfg))
    return finetune(model, cfg, run, step_offset=pre.steps)


def dry_run_step(model: ViT, cfg: Config) -> dict[str, float]:
    """One pre-training step of a fresh ViT at the pre-training resolution, then one fine-tuning step of
    the built model at the fine-tuning resolution (2 random images each)."""
    pre = pretrain_config(cfg)
    out = {"pretrain_loss": vit.dry_run_step(vit.build(pre), pre)["loss"]}
    x = torch.rand(2, model.channels, cfg.image_size, cfg.image_size, device=model.pos_embed.device)
    y = torch.randint(0, num_classes(cfg), (2,), device=x.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.finetune_lr, momentum=cfg.momentum)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return out | {"finetune_loss": loss.item()}


def data_fingerprint(cfg: Config) -> str:
    return f"{classify.data_fingerprint(pretrain_config(cfg))}; fine-tuning: {classify.data_fingerprint(finetune_config(cfg))}"


required_data = classify.required_data
