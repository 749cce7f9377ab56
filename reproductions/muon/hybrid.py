"""Muon for the hidden matrices and AdamW for the rest: the optimiser settings every Muon arm shares
(`MuonSettings`, mixed into each task's Config) and the pair of optimisers made from them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from reproductions.muon.muon import Muon, split_parameters

OPTIMIZERS = ("muon", "muon_torch", "adamw")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass
class MuonSettings:
    optimizer: str = "muon"         # muon (ours) | muon_torch (torch.optim.Muon) | adamw (AdamW on everything)
    muon_lr: float = 0.02           # (M5) the post's default learning rate
    momentum: float = 0.95          # (M1) mu
    nesterov: bool = True           # (M2)
    ns_steps: int = 5               # (M3) iterations of the quintic
    ns_dtype: str = "float32"       # (M3) precision of our iteration (the post, on GPUs: bfloat16)
    scaling: str = "original"       # (M4) original: sqrt(max(1, fan_out/fan_in)); record: sqrt(max(fan_out, fan_in))
    muon_weight_decay: float = 0.0  # none in the post


def check(cfg: MuonSettings) -> None:
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"config field 'optimizer': {cfg.optimizer!r} is not one of {OPTIMIZERS}")
    if cfg.ns_dtype not in DTYPES:
        raise ValueError(f"config field 'ns_dtype': {cfg.ns_dtype!r} is not one of {sorted(DTYPES)}")


def muon_optimizer(params: list[nn.Parameter], cfg: MuonSettings) -> torch.optim.Optimizer:
    """Our Muon, or PyTorch's for `muon_torch`, with the same hyper-parameters."""
    check(cfg)
    if cfg.optimizer == "muon":
        return Muon(params, lr=cfg.muon_lr, momentum=cfg.momentum, nesterov=cfg.nesterov, ns_steps=cfg.ns_steps,
                    scaling=cfg.scaling, weight_decay=cfg.muon_weight_decay, ns_dtype=DTYPES[cfg.ns_dtype])
    return torch_muon(params, cfg)


def torch_muon(params: list[nn.Parameter], cfg: MuonSettings) -> torch.optim.Optimizer:
    """PyTorch's `torch.optim.Muon` with our hyper-parameters. Its conventions, mapped to ours: its
    momentum buffer is an average (B <- mu B + (1 - mu) G; Nesterov: (1 - mu) G + mu B), (1 - mu)
    times ours, a factor the Newton-Schulz normalisation removes; `adjust_lr_fn='original'` is our
    scaling 'original'; its weight decay (default 0.1) is set to ours; it iterates in bfloat16,
    which it does not let one change."""
    if cfg.scaling != "original":
        raise ValueError(f"config field 'scaling': torch.optim.Muon has no {cfg.scaling!r} scaling; use 'original'")
    return torch.optim.Muon(params, lr=cfg.muon_lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                            ns_steps=cfg.ns_steps, weight_decay=cfg.muon_weight_decay, adjust_lr_fn="original")


def hybrid(model: nn.Module, cfg: MuonSettings, adamw: callable, hidden: str = "blocks.") -> list[torch.optim.Optimizer]:
    """[Muon on the hidden matrices, adamw(rest)]: `adamw(params)` makes the task's AdamW for the
    parameters Muon does not take (`split_parameters`)."""
    matrices, rest = split_parameters(model, hidden)
    return [muon_optimizer(matrices, cfg), adamw(rest)]


def is_muon(opt: torch.optim.Optimizer) -> bool:
    return isinstance(opt, (Muon, torch.optim.Muon))


def set_rates(opts: list[torch.optim.Optimizer], multiplier: float, adamw_lr: float, cfg: MuonSettings) -> None:
    """The schedule's multiplier on each optimiser's base rate: `muon_lr` for Muon, `adamw_lr` for AdamW
    (a group's `lr_scale`, if any, multiplies its rate)."""
    for opt in opts:
        base = cfg.muon_lr if is_muon(opt) else adamw_lr
        for group in opt.param_groups:
            group["lr"] = base * multiplier * group.get("lr_scale", 1.0)
