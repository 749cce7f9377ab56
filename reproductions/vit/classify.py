"""Supervised training of an image classifier: the loop every classifier arm of the vision papers
shares (ViT and its ResNet baseline here; MAE's fine-tuning and its from-scratch baseline).

The recipe is the ViT paper's (Section 4.1, Appendix B.1): Adam(W) with beta = (0.9, 0.999),
weight decay on the weight matrices only, linear warm-up then cosine (or linear) decay of the
learning rate, gradient clipping at global norm 1. The budget is counted in optimisation steps,
so arms trained on different amounts of data get the same compute.

Batches are a pure function of (seed, step): each epoch is a permutation drawn from a generator
seeded by (seed, epoch), so a run resumed at a step sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from evals.tasks.image_loaders import CHANNELS, NUM_CLASSES, fingerprint, image_dataset, missing_data
from reproductions.common.training import restore, snapshot


@dataclass
class TrainConfig:
    """Data and optimisation; the defaults are the paper's ImageNet-1k training (Table 3, B.1)."""

    dataset: str = "imagenet"           # digits | shapes | cifar10 | imagenet
    data_root: str = "data/imagenet"    # cifar10 / imagenet only
    image_size: int = 224
    n_train: int = 0                    # training examples (0: the whole split; shapes: 20,000)
    steps: int = 93_750                 # 300 epochs of ImageNet-1k at batch 4096
    batch_size: int = 4096
    lr: float = 3e-3
    weight_decay: float = 0.3
    beta2: float = 0.999
    warmup_steps: int = 10_000
    lr_decay: str = "cosine"            # cosine | linear, to zero at `steps`
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    random_shift: int = 0               # in-memory data: random translation by up to this many pixels
    workers: int = 8                    # loader processes for folder datasets
    log_every: int = 100


def num_classes(cfg: TrainConfig) -> int:
    return NUM_CLASSES[cfg.dataset]


def channels(cfg: TrainConfig) -> int:
    return CHANNELS[cfg.dataset]


def training_set(cfg: TrainConfig) -> Dataset:
    return image_dataset(cfg.dataset, "train", cfg.image_size, cfg.data_root, cfg.n_train, augment=True)


def learning_rate(step: int, peak: float, warmup_steps: int, total_steps: int, decay: str = "cosine") -> float:
    """Linear warm-up to the peak, then cosine or linear decay to zero at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if decay == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
    if decay == "linear":
        return peak * (1.0 - progress)
    raise ValueError(f"config field 'lr_decay': {decay!r} is not 'cosine' or 'linear'")


def param_groups(model: nn.Module, weight_decay: float, exclude: tuple[str, ...] = ()) -> list[dict]:
    """Weight decay on matrices and kernels; none on biases, norms, tokens and position embeddings.
    Parameters whose names start with one of `exclude` (or that are frozen) are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or name.startswith(exclude):
            continue
        skip = p.ndim < 2 or name.endswith(("_token", "pos_embed"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class StepBatches:
    """The indices of the batches of steps start, start + 1, ...: batch s holds positions
    s*B .. (s+1)*B - 1 of the concatenated epoch permutations."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0):
        if n <= 0:
            raise ValueError("training set is empty")
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start_step
        self._perms: dict[int, torch.Tensor] = {}

    def indices(self, step: int) -> torch.Tensor:
        pos = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs = pos // self.n
        out = torch.empty_like(pos)
        for e in epochs.unique().tolist():
            if e not in self._perms:
                self._perms = {k: v for k, v in self._perms.items() if k >= e - 1}
                self._perms[e] = epoch_permutation(self.n, self.seed, e)
            sel = epochs == e
            out[sel] = self._perms[e][pos[sel] % self.n]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.indices(step).tolist()
            step += 1


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels each way, filling with its edge pixels."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    rows = torch.randint(0, 2 * max_shift + 1, (n, 1)) + torch.arange(h)
    cols = torch.randint(0, 2 * max_shift + 1, (n, 1)) + torch.arange(w)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def batches(ds: Dataset, cfg: TrainConfig, seed: int, start_step: int, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches (x, y) on `device` from `start_step` on, augmented."""
    sampler = StepBatches(len(ds), cfg.batch_size, seed, start_step)
    if isinstance(ds, TensorDataset):
        x_all, y_all = ds.tensors
        for idx in sampler:
            yield random_shift(x_all[idx], cfg.random_shift).to(device), y_all[idx].to(device)
    else:
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=cfg.workers, pin_memory=str(device).startswith("cuda"),
                            persistent_workers=cfg.workers > 0)
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def fit(model: nn.Module, ds: Dataset, cfg: TrainConfig, run, groups: list[dict] | None = None, prefix: str = "",
        step_offset: int = 0) -> nn.Module:
    """Train `model` with cross-entropy on `ds` for `cfg.steps` steps, on the parameter `groups`
    (default: all of the model's, weight decay on matrices only; a group's `lr_scale` multiplies
    its learning rate). Logs `{prefix}loss`, `{prefix}train_accuracy` and `{prefix}lr` every
    `cfg.log_every` steps at step `step_offset + step` (a run with an earlier phase counts on)."""
    groups = groups or param_groups(model, cfg.weight_decay)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))
    parts = {"model": model, "opt": opt}
    step = 0
    resumed = run.resume_state()
    if resumed is not None and resumed["phase"] == prefix:
        step = restore(resumed["parts"], parts)["step"] - step_offset
    trained = [p for g in opt.param_groups for p in g["params"]]
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches(ds, cfg, run.seed, step, run.device):
        if step >= cfg.steps:
            break
        lr = learning_rate(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr_decay)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
        opt.step()
        step += 1
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(-1) == y).sum().item()
        seen += len(y)
        if step % cfg.log_every == 0 or step == cfg.steps:
            values = {f"{prefix}loss": loss_sum / seen, f"{prefix}train_accuracy": correct / seen, f"{prefix}lr": lr}
            run.log(step_offset + step, **values)
            loss_sum, correct, seen = 0.0, 0, 0
        run.maybe_checkpoint(step_offset + step, lambda: {"phase": prefix, "parts": snapshot(parts, step=step_offset + step)})
        run.advance()
    return model


def data_fingerprint(cfg: TrainConfig) -> str:
    return f"{cfg.dataset} train n={cfg.n_train or 'all'} size={cfg.image_size}: {fingerprint(training_set(cfg))}"


def required_data(cfg: TrainConfig) -> list[str]:
    return missing_data(cfg.dataset, cfg.data_root)
