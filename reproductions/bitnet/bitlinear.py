"""BitLinear (Wang et al., arXiv 2310.11453, Section 2.1): a drop-in for nn.Linear with 1-bit
weights and 8-bit activations, trained from full-precision latent weights.

- eq. (1)  W~ = Sign(W - alpha), alpha = (1 / nm) sum_ij W_ij; Sign(x) = +1 if x > 0, -1 if x <= 0;
- eq. (2)  x~ = Quant(x) = Clip(x * Q_b / gamma, -Q_b + eps, Q_b - eps), gamma = ||x||_inf,
           Q_b = 2^(b - 1) (b = 8 here), Clip(x, a, b) = max(a, min(b, x)), then rounded;
- eq. (4)  y = W~ x~, the matrix multiplication of the binarised weights and the quantised input;
- eq. (5)  LN(x) = (x - E(x)) / sqrt(Var(x) + eps): a LayerNorm (no gain, no bias) before the
           activation quantisation, so the output's variance stays near one (SubLN);
- eq. (6)  y = W~ Quant(LN(x)) * beta * gamma / Q_b, beta = ||W||_1 / (nm): the two scales undo
           the quantisation, so BitLinear's output has the scale of a full-precision layer's;
- §2.2     the straight-through estimator: Sign and Clip (and the rounding) are passed by in the
           backward pass, so the gradients reach the full-precision latent weights and inputs.

The paper's group quantisation (eqs. 7-8) only serves model parallelism and is not implemented:
one alpha and beta per matrix, one gamma per token (see the README). The paper also gives eq. (3)
for inputs of a ReLU; the GPT here has no BitLinear whose output feeds one directly, so every
input is quantised with eq. (2).

Beside the training layer, this file holds the pieces that measure what the paper claims:
`binarise_after_training` (the post-training W1A8 quantisation the paper compares with, Table 3's
'Absmax' row) and `pack_signs` / `unpack_signs` (1-bit weights stored packed, eight per byte).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ACT_BITS = 8
CLIP_EPS = 1e-5          # eq. (2)'s epsilon: keeps x~ strictly inside (-Q_b, Q_b) before rounding
LN_EPS = 1e-5            # eq. (5)'s epsilon


def q_b(bits: int = ACT_BITS) -> int:
    """Q_b = 2^(b - 1), the range of eq. (2)."""
    return 2 ** (bits - 1)


def binarise(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1) and eq. (6)'s beta: (W~ in {-1, +1}, beta) for one weight matrix."""
    alpha = w.mean()
    signs = torch.where(w - alpha > 0, 1.0, -1.0).to(w.dtype)   # Sign(0) = -1, as eq. (1) defines it
    return signs, w.abs().mean()


def absmax_quantize(x: torch.Tensor, bits: int = ACT_BITS, eps: float = CLIP_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (2) per token (over the last dimension): (x~, gamma), x~ integers in [-Q_b, Q_b]."""
    qb = q_b(bits)
    gamma = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)  # a zero row stays zero
    return torch.clamp(x * qb / gamma, -qb + eps, qb - eps).round(), gamma


def straight_through(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """The value of `forward` with the gradient of `backward` (§2.2's STE)."""
    return backward + (forward - backward).detach()


class BitLinear(nn.Linear):
    """Eq. (6) with full-precision latent weights W, trained through the straight-through
    estimator. A subclass of nn.Linear (its weight, its initialisation by the GPT), without bias.
    The matrix multiplication is done on the dequantised tensors (W~ beta) (x~ gamma / Q_b), which
    equals eq. (6)'s W~ x~ * beta gamma / Q_b."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, bits: int = ACT_BITS):
        if bias:
            raise ValueError("BitLinear has no bias (BitNet's linear layers have none)")
        super().__init__(in_features, out_features, bias=False)
        self.bits = bits

    def quantized_weight(self) -> torch.Tensor:
        """W~ * beta with the straight-through gradient to W (eqs. 1 and 6)."""
        signs, beta = binarise(self.weight)
        return straight_through(signs * beta, self.weight)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        """x~ * gamma / Q_b of LN(x) with the straight-through gradient to LN(x) (eqs. 2, 5, 6)."""
        x = F.layer_norm(x, (self.in_features,), eps=LN_EPS)
        xq, gamma = absmax_quantize(x, self.bits)
        return straight_through(xq * gamma / q_b(self.bits), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, W1A{self.bits}"


def bit_linear(in_features: int, out_features: int, bias: bool = False) -> BitLinear:
    """The GPT's linear-layer factory (gpt.py's `linear` extension point) for BitNet."""
    return BitLinear(in_features, out_features, bias)


class PostTrainingBinarised(nn.Module):
    """A trained full-precision linear layer quantised after training to W1A8 with the same
    formulas (eq. 1 for the weights with beta, eq. 2 absmax per token for the activations), but
    without the LayerNorm it never learned with: Table 3's 'Absmax' 1-bit post-training baseline."""

    def __init__(self, linear: nn.Linear, bits: int = ACT_BITS):
        super().__init__()
        signs, beta = binarise(linear.weight.detach())
        self.register_buffer("weight", signs * beta)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, gamma = absmax_quantize(x, self.bits)
        return F.linear(xq * gamma / q_b(self.bits), self.weight, self.bias)


def binarise_after_training(model: nn.Module, keep: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Replace every nn.Linear of `model` (in place) but those named in `keep` by its W1A8
    post-training quantisation; the embeddings and the (tied) output layer stay full precision,
    as in BitNet."""
    for name, child in list(model.named_children()):
        if isinstance(child, BitLinear):
            raise TypeError(f"{name}: already a BitLinear; post-training binarisation is for full-precision models")
        if isinstance(child, nn.Linear) and name not in keep:
            setattr(model, name, PostTrainingBinarised(child))
        else:
            binarise_after_training(child, keep)
    return model


# -- 1-bit storage -------------------------------------------------------------------------------
_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_signs(signs: torch.Tensor) -> torch.Tensor:
    """Signs in {-1, +1} (any shape) -> uint8, eight per byte, most significant bit first
    (numpy's packbits order); +1 is a set bit; the last byte is padded with zeros."""
    bits = (signs.flatten() > 0).to(torch.uint8)
    bits = F.pad(bits, (0, (-bits.numel()) % 8)).view(-1, 8)
    packed = bits[:, 0] << 7
    for i in range(1, 8):
        packed |= bits[:, i] << (7 - i)
    return packed


def unpack_signs(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The inverse of `pack_signs`: float signs in {-1, +1} of `shape`."""
    bits = (packed[:, None] & _BIT_WEIGHTS.to(packed.device)) > 0
    n = math.prod(shape)
    return torch.where(bits.flatten()[:n], 1.0, -1.0).view(shape)
