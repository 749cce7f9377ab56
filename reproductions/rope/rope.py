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

The sinusoidal baseline (`TransformerSinusoids`) adds the Transformer's sinusoids (its §3.5) at the
scale they have there relative to the token embeddings (its §3.4): the embeddings are multiplied by
sqrt(d_model), and with the reference implementation's initialisation (std d_model^-1/2) that makes
their entries of unit scale, while a sinusoid's entries have a root mean square of 1/sqrt(2). The
GPT initialises its token embeddings at std 0.02 and does not scale them, so the table is scaled by
0.02 to keep that ratio; unscaled (the GPT's `SinusoidalPositions`), a table of norm sqrt(d/2) would
drown token embeddings of norm about 0.02 sqrt(d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from reproductions.transformer import lm
from reproductions.transformer.gpt import GPTConfig, PositionalScheme
from reproductions.transformer.layers import sinusoidal_table

GPT_EMBEDDING_STD = 0.02  # the GPT's initialisation of its token embeddings (`GPT._init`)


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


class TransformerSinusoids(PositionalScheme):
    """The Transformer's sinusoids, added to the embeddings at the paper's relative scale (above)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.register_buffer("pe", GPT_EMBEDDING_STD * sinusoidal_table(cfg.block_size, cfg.n_embd), persistent=False)

    def embed(self, x, positions):
        return x + self.pe[positions]


@dataclass
class Config(lm.Config):
    """The GPT of `transformer/lm.py` (built and trained by its `build` and `train`), whose
    positional schemes gain rotary embeddings, the default here, and whose sinusoids are the
    Transformer's at its relative scale."""

    positions: ClassVar[dict] = {**lm.POSITIONS, "rope": RotaryPositions, "sinusoidal": TransformerSinusoids}
    position: str = "rope"
