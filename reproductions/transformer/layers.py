"""The Transformer's building blocks (Vaswani et al., arXiv 1706.03762, Section 3), shared by the
encoder-decoder of the paper and the decoder-only GPT that later papers extend.

- eq. (1)   Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V;
- §3.2.2    multi-head attention: h heads of size d_model / h, concatenated and projected by W^O;
- eq. (2)   FFN(x) = max(0, x W1 + b1) W2 + b2, position-wise;
- §3.5      PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(...).

An attention function has the signature `attend(q, k, v, mask=None, causal=False) -> out` on
tensors shaped (batch, heads, time, head_dim); `mask` is boolean, True where a query may look.
Layers take a `linear(in_features, out_features, bias)` factory, so a paper that changes the
linear layer (BitNet, LoRA) swaps the factory instead of forking the model.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

LinearFactory = Callable[[int, int, bool], nn.Module]


class AttentionFn(Protocol):
    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                 causal: bool = False) -> torch.Tensor: ...


def causal_mask(t_q: int, t_k: int, device=None) -> torch.Tensor:
    """Query i (the last t_q of t_k positions) may look at keys 0..(t_k - t_q + i)."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def naive_attention(q, k, v, mask=None, causal=False):
    """Eq. (1), materialising the full (t_q x t_k) score matrix."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if causal:
        scores = scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), q.device), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def sdpa_attention(q, k, v, mask=None, causal=False):
    """Eq. (1) through torch's fused kernel (the same numbers as `naive_attention`, less memory)."""
    if causal and (mask is not None or q.size(-2) != k.size(-2)):  # torch's is_causal aligns top-left
        causal_m = causal_mask(q.size(-2), k.size(-2), q.device)
        mask, causal = causal_m if mask is None else mask & causal_m, False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def sinusoidal_table(n_positions: int, d_model: int) -> torch.Tensor:
    """§3.5: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d))."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.sin(pos * inv_freq)
    pe[:, 1::2] = torch.cos(pos * inv_freq[: d_model // 2])
    return pe


class MultiHeadAttention(nn.Module):
    """§3.2.2: project to h heads, attend, concatenate, project with W^O.

    `rotate(q, k)` lets a positional scheme act on queries and keys (RoPE); `cache` (a dict kept
    by the caller, one per layer) holds the keys and values of earlier positions for generation.
    """

    def __init__(self, d_model: int, n_heads: int, attend: AttentionFn = sdpa_attention,
                 linear: LinearFactory = nn.Linear, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.attend = n_heads, attend
        self.w_q = linear(d_model, d_model, bias)
        self.w_k = linear(d_model, d_model, bias)
        self.w_v = linear(d_model, d_model, bias)
        self.w_o = linear(d_model, d_model, bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(self, x, memory=None, mask=None, causal=False, rotate=None, cache: dict | None = None):
        source = x if memory is None else memory
        q, k, v = self._heads(self.w_q(x)), self._heads(self.w_k(source)), self._heads(self.w_v(source))
        if rotate is not None:
            q, k = rotate(q, k)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        out = self.attend(q, k, v, mask=mask, causal=causal)
        b, _, t, _ = out.shape
        return self.w_o(out.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """Eq. (2), position-wise; the activation is ReLU in the paper, GELU in GPT-2."""

    def __init__(self, d_model: int, d_ff: int, activation: Callable = F.relu, linear: LinearFactory = nn.Linear,
                 bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.w_1, self.w_2 = linear(d_model, d_ff, bias), linear(d_ff, d_model, bias)
        self.activation, self.dropout = activation, nn.Dropout(dropout)

    def forward(self, x):
        return self.w_2(self.dropout(self.activation(self.w_1(x))))
