"""RoFormer's rotary position embedding (Su et al., arXiv 2104.09864) as a positional scheme of
the GPT in `reproductions/transformer/gpt.py`.

- eq. (15)  theta_i = 10000^(-2(i-1)/d), i = 1..d/2, for a head of size d;
- eq. (14)  f_{q,k}(x_m, m) = R^d_{Theta,m} W_{q,k} x_m, R a block-diagonal of 2x2 rotations by
            m * theta_i acting on the pairs (x_1, x_2), (x_3, x_4), ...;
- eq. (34)  computed without the sparse matrix: R x = x * cos(m theta) + rotate_pairs(x) * sin(m theta),
            where rotate_pairs(x) = (-x_2, x_1, -x_4, x_3, ...);
- eq. (16)  so q_m^T k_n = x_m^T W_q^T R^d_{Theta, n-m} W_k x_n: the score depends on n - m alone.

Only queries and keys are rotated (values are not), inside every attention layer; nothing is added
to the token embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from reproductions.transformer import lm
from reproductions.transformer.gpt import GPTConfig, PositionalScheme


def rotary_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Eq. (15): theta_i = base^(-2(i-1)/d)."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head size, got {head_dim}")
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x_1, x_2, x_3, x_4, ...) -> (-x_2, x_1, -x_4, x_3, ...)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Eq. (34) on (..., time, head_dim), with cos/sin of (time, head_dim) (each angle twice)."""
    return x * cos + rotate_pairs(x) * sin


class RotaryPositions(PositionalScheme):
    def __init__(self, cfg: GPTConfig, base: float = 10000.0):
        super().__init__()
        angles = torch.arange(cfg.block_size, dtype=torch.float32)[:, None] * rotary_frequencies(cfg.n_embd // cfg.n_head, base)
        angles = angles.repeat_interleave(2, dim=-1)  # theta_i acts on the pair (2i-1, 2i)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rotate(self, q, k, positions):
        cos, sin = self.cos[positions].to(q.dtype), self.sin[positions].to(q.dtype)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


@dataclass
class Config(lm.Config):
    """The GPT of `transformer/lm.py` (built and trained by its `build` and `train`), whose
    positional schemes gain rotary embeddings, the default here."""

    positions: ClassVar[dict] = {**lm.POSITIONS, "rope": RotaryPositions}
    position: str = "rope"
