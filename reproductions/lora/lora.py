"""LoRA's layer (Hu et al., arXiv 2106.09685, Section 4), from scratch: a frozen linear map plus a
trainable low-rank update, injected into chosen projections of a pre-trained model.

- eq. (1)   full fine-tuning: max over all weights Phi of sum log P_Phi(y_t | x, y_<t);
- eq. (2)   parameter-efficient: the update Delta Phi = Delta Phi(Theta) is encoded by far fewer
            parameters Theta, and only Theta is trained (Phi_0 frozen);
- eq. (3)   h = W_0 x + Delta W x = W_0 x + B A x, with W_0 in R^{d x k} frozen, B in R^{d x r},
            A in R^{r x k}, r << min(d, k);
- §4.1      A random, B = 0 (so Delta W = BA = 0 and the adapted model is the pre-trained one at
            the start), Delta W x scaled by alpha / r ("tuning alpha is roughly the same as tuning
            the learning rate ... we simply set alpha to the first r we try");
- §4.1      no additional inference latency: W = W_0 + BA is computed and stored, and inference
            is one matrix product as before; subtracting BA recovers W_0 (merge / unmerge);
- §4.2      applied to the attention weights only, W_q and W_v by default (Table 5), the MLP,
            LayerNorms and biases frozen.

A is drawn as the authors' code does (loralib: `kaiming_uniform_(a=sqrt(5))`, the default of
`nn.Linear`; PEFT's default too); the text says "random Gaussian". Dropout on the input of the
low-rank path is the authors' `lora_dropout` (0.1 for GPT-2 on E2E, Table 11).
"""

from __future__ import annotations

import copy
import math
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_TARGETS = ("w_q", "w_v")  # §4.2: W_q and W_v (the GPT's names of the query and value projections)


class LoRALinear(nn.Module):
    """y = x W_0^T + b + (alpha / r) * dropout(x) A^T B^T (eq. 3), W_0 and b frozen, A and B trained.

    `merge()` adds (alpha / r) B A into W_0 in place, after which the forward pass is the plain
    linear map (one matrix product); `unmerge()` subtracts it again."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, r: int, alpha: float, dropout: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r={r}: must be at least 1")
        self.out_features, self.in_features = weight.shape
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)           # W_0, frozen
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)  # A random (loralib's draw)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                    generator: torch.Generator | None = None) -> "LoRALinear":
        return cls(linear.weight, linear.bias, r, alpha, dropout, generator)

    def delta_weight(self) -> torch.Tensor:
        """Delta W = (alpha / r) B A, d x k."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.weight, self.bias)  # W_0 x (+ b), or W x once merged
        if self.merged:
            return h
        return h + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling  # + B A x (eq. 3)

    @torch.no_grad()
    def merge(self) -> None:
        """W = W_0 + BA (§4.1): inference is then one matrix product, as before adaptation."""
        if not self.merged:
            self.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W_0 = W - BA: back to the frozen weight and the separate low-rank path."""
        if self.merged:
            self.weight -= self.delta_weight()
            self.merged = False

    def to_linear(self) -> nn.Linear:
        """A plain nn.Linear holding W_0 + BA: the adapted layer with the adapter removed."""
        with torch.no_grad():
            w = self.weight if self.merged else self.weight + self.delta_weight()
            out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                            device=w.device, dtype=w.dtype)
            out.weight.copy_(w)
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def inject(model: nn.Module, r: int, alpha: float, targets: Iterable[str] = DEFAULT_TARGETS, dropout: float = 0.0,
           generator: torch.Generator | None = None) -> list[str]:
    """Replace every nn.Linear whose own name is in `targets` by a LoRALinear around its weights,
    then freeze everything but the low-rank factors (eq. 2). Returns the adapted modules' names."""
    targets = set(targets)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rpartition(".")[2] in targets]
    if not names:
        raise ValueError(f"no nn.Linear named one of {sorted(targets)} in {type(model).__name__}")
    for n in names:
        _replace(model, n, LoRALinear.from_linear(model.get_submodule(n), r, alpha, dropout, generator))
    for pname, p in model.named_parameters():
        p.requires_grad_(pname.rpartition(".")[2] in ("lora_A", "lora_B"))
    return names


def adapters(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge(model: nn.Module) -> None:
    for m in adapters(model):
        m.merge()


def unmerge(model: nn.Module) -> None:
    for m in adapters(model):
        m.unmerge()


def merged_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with every LoRALinear replaced by the nn.Linear of its merged weight:
    the pre-trained architecture, exactly (what deployment runs)."""
    plain = copy.deepcopy(model)
    for n, m in list(plain.named_modules()):
        if isinstance(m, LoRALinear):
            _replace(plain, n, m.to_linear())
    for p in plain.parameters():
        p.requires_grad_(False)
    return plain


def lora_parameter_count(d_in: int, d_out: int, r: int) -> int:
    """|A| + |B| = r (d_in + d_out) for one adapted d_out x d_in matrix."""
    return r * (d_in + d_out)
