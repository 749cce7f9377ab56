"""Muon (Jordan et al., 2024, https://kellerjordan.github.io/posts/muon/), the optimiser, from scratch.

The post numbers no equations; the names below are its sections' and this file's:

- (M1) momentum:      B_t = mu * B_{t-1} + G_t                       (SGD-momentum's buffer, mu = 0.95)
- (M2) Nesterov:      U_t = G_t + mu * B_t                            (the post's `nesterov=True`)
- (M3) orthogonalise: O_t = NewtonSchulz5(U_t) ~ U V^T for U_t = U S V^T ('Design', the zeroth power of U_t)
- (M4) shape scale:   O_t <- O_t * sqrt(max(1, fan_out / fan_in))     (the Muon repository's 'original' scaling;
                      the NanoGPT record of 10/10/24 used sqrt(max(fan_out, fan_in)) with a 10x smaller lr: `record`)
- (M5) update:        W_t = W_{t-1} - lr * O_t                        (optionally with decoupled weight decay)

The quintic Newton-Schulz iteration (M3), section 'Design': X_0 = U / ||U||_F (so every singular
value is <= 1), then five times

    A = X X^T,   X <- a X + (b A + c A^2) X,    (a, b, c) = (3.4445, -4.7750, 2.0315),

which maps each singular value s of X through phi(s) = a s + b s^3 + c s^5. The coefficients
maximise the slope at zero (phi'(0) = a = 3.4445), so small singular values grow fast; the price is
that the iterates do not converge to 1 but oscillate in a band around it (the post: 'something like
U S' V^T where S'_ii ~ Uniform(0.5, 1.5)'; for these coefficients the band is about [0.68, 1.13]).
The iteration runs on the wide orientation (rows <= columns) so that A is the smaller Gram matrix.

Muon is for the 2-D weight matrices of the hidden layers; embeddings, the output head, gains and
biases stay with AdamW (section 'Empirical considerations'): `split_parameters` makes that split.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn

# (M3) the quintic's coefficients, section 'Design' of the post (and the Muon repository's muon.py)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7
SCALINGS = ("original", "record", "none")


def newton_schulz5(g: torch.Tensor, steps: int = NS_STEPS, coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                   eps: float = EPS, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """(M3): an approximate orthogonalisation U S' V^T of the matrix `g` = U S V^T, computed in `dtype`
    (the post's bfloat16; float32 where bfloat16 matrix products are slow, as on most CPUs)."""
    if g.ndim != 2:
        raise ValueError(f"Newton-Schulz orthogonalises matrices, got a tensor of shape {tuple(g.shape)}")
    a, b, c = coefficients
    x = g.to(dtype)
    x = x / (x.norm() + eps)          # ||X||_2 <= ||X||_F = 1: every singular value in [0, 1]
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T                       # work on the wide side: A = X X^T is min(rows, cols) square
    for _ in range(steps):
        gram = x @ x.T                # A = X X^T
        poly = b * gram + c * gram @ gram
        x = a * x + poly @ x          # X <- a X + b A X + c A^2 X = phi(X)
    return (x.T if tall else x).to(g.dtype)


def shape_scale(shape: torch.Size, scaling: str) -> float:
    """(M4): the factor on the orthogonalised update of a (fan_out, fan_in) weight."""
    fan_out, fan_in = shape[0], shape[1]
    if scaling == "original":          # Muon repository, torch.optim.Muon's default ('original')
        return math.sqrt(max(1.0, fan_out / fan_in))
    if scaling == "record":            # modded-nanogpt record of 10/10/24: update RMS about 1
        return math.sqrt(max(fan_out, fan_in))
    if scaling == "none":
        return 1.0
    raise ValueError(f"scaling {scaling!r}: expected one of {SCALINGS}")


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-schulz, for 2-D parameters: (M1)-(M5) per matrix.

    `lr`: the learning rate of (M5); `momentum`: mu of (M1); `nesterov`: (M2) (else U_t = B_t);
    `ns_steps`: iterations of (M3); `scaling`: (M4); `weight_decay`: decoupled, W <- W (1 - lr wd)
    (none in the post; torch.optim.Muon's default is 0.1); `ns_dtype`: the iteration's precision."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = NS_STEPS, scaling: str = "original", weight_decay: float = 0.0,
                 ns_dtype: torch.dtype = torch.bfloat16):
        if scaling not in SCALINGS:
            raise ValueError(f"scaling {scaling!r}: expected one of {SCALINGS}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, scaling=scaling,
                        weight_decay=weight_decay, ns_dtype=ns_dtype)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon is for 2-D weight matrices; got a parameter of shape {tuple(p.shape)} "
                                     "(give embeddings, heads, gains and biases to AdamW: split_parameters)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(mu).add_(g)                                  # (M1)
                u = g.add(buf, alpha=mu) if group["nesterov"] else buf  # (M2)
                o = newton_schulz5(u, group["ns_steps"], dtype=group["ns_dtype"])  # (M3)
                o = o * shape_scale(p.shape, group["scaling"])       # (M4)
                if group["weight_decay"]:
                    p.mul_(1.0 - group["lr"] * group["weight_decay"])
                p.add_(o, alpha=-group["lr"])                         # (M5)
        return loss


def split_parameters(model: nn.Module, hidden: str = "blocks.") -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(hidden matrices for Muon, everything else for AdamW): the 2-D weights of the modules whose
    names contain `hidden` (the transformer blocks' projections), and the rest: token and position
    embeddings, the tied output head, LayerNorm gains, biases (section 'Empirical considerations')."""
    muon, other, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (muon if p.ndim == 2 and hidden in name else other).append(p)
    return muon, other
