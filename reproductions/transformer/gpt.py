"""A decoder-only Transformer language model, read like nanoGPT (GPT-2's pre-LN blocks, tied
input and output embeddings), with four small extension points that later papers plug into
instead of forking this file:

- `position`: a `PositionalScheme`, which may add to the token embeddings (learned, sinusoidal)
  or act on queries and keys inside attention (RoPE, `reproductions/rope`);
- `attend`: the attention function of `layers.py`'s signature (FlashAttention's tiled kernel);
- `ffn`: a factory `ffn(config, linear) -> nn.Module` for the feed-forward block (Mixtral's MoE);
- `linear`: the linear-layer factory every projection is built with (BitNet, LoRA).

`generate` keeps a key/value cache per layer, so each new token costs one position's work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from reproductions.transformer.layers import (AttentionFn, FeedForward, LinearFactory, MultiHeadAttention,
                                              sdpa_attention, sinusoidal_table)


@dataclass
class GPTConfig:
    vocab_size: int = 256
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    ffn_hidden: int = 0      # 0: 4 * n_embd, as GPT-2
    dropout: float = 0.0
    bias: bool = False

    @property
    def d_ff(self) -> int:
        return self.ffn_hidden or 4 * self.n_embd


# -- positional schemes ------------------------------------------------------------------------
class PositionalScheme(nn.Module):
    """Where a token is: `embed` may add to the token embeddings, `rotate` may act on (q, k).
    Both get the absolute positions of the tokens at hand (offset by the cache in generation)."""

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        return q, k


class NoPositions(PositionalScheme):
    """No positional information at all (causal attention alone still orders the tokens)."""


class LearnedPositions(PositionalScheme):
    """GPT-2's learned absolute position embeddings."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)

    def embed(self, x, positions):
        return x + self.wpe(positions)


class SinusoidalPositions(PositionalScheme):
    """The Transformer's fixed sinusoids (§3.5), added to the embeddings."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(cfg.block_size, cfg.n_embd), persistent=False)

    def embed(self, x, positions):
        return x + self.pe[positions]


# -- the model ---------------------------------------------------------------------------------
FFNFactory = Callable[[GPTConfig, LinearFactory], nn.Module]


def mlp(cfg: GPTConfig, linear: LinearFactory = nn.Linear) -> nn.Module:
    """GPT-2's feed-forward block: eq. (2) of the Transformer with GELU."""
    return FeedForward(cfg.n_embd, cfg.d_ff, F.gelu, linear, cfg.bias, cfg.dropout)


class Block(nn.Module):
    """Pre-LN residual block: x + attn(LN(x)), then x + ffn(LN(x))."""

    def __init__(self, cfg: GPTConfig, attend: AttentionFn, ffn: FFNFactory, linear: LinearFactory):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = MultiHeadAttention(cfg.n_embd, cfg.n_head, attend, linear, cfg.bias)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.ffn = ffn(cfg, linear)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, rotate, cache=None):
        x = x + self.dropout(self.attn(self.ln_1(x), causal=True, rotate=rotate, cache=cache))
        return x + self.dropout(self.ffn(self.ln_2(x)))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, position: PositionalScheme | None = None, attend: AttentionFn = sdpa_attention,
                 ffn: FFNFactory = mlp, linear: LinearFactory = nn.Linear):
        super().__init__()
        self.cfg = cfg
        self.position = position if position is not None else LearnedPositions(cfg)
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, attend, ffn, linear) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied (GPT-2; the Transformer's §3.4)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
            if name.endswith(("w_o.weight", "w_2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, caches: list[dict] | None = None):
        """Logits for every position, and the mean cross-entropy when `targets` are given."""
        t = idx.size(1)
        past = caches[0]["k"].size(2) if caches and "k" in caches[0] else 0
        if past + t > self.cfg.block_size:
            raise ValueError(f"sequence of {past + t} tokens exceeds block_size={self.cfg.block_size}")
        positions = torch.arange(past, past + t, device=idx.device)
        x = self.drop(self.position.embed(self.wte(idx), positions))
        rotate = partial(self.position.rotate, positions=positions)
        for i, block in enumerate(self.blocks):
            x = block(x, rotate, caches[i] if caches is not None else None)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
        """Continue `idx` (batch, time) by `max_new_tokens`; temperature 0 is greedy. With the cache
        the prompt is read once and each step feeds only the newest token."""
        caches = [{} for _ in self.blocks] if use_cache else None
        out, feed = idx, idx
        for _ in range(max_new_tokens):
            if not use_cache:
                feed = out[:, -self.cfg.block_size:]
            logits = self(feed, caches=caches)[0][:, -1, :]
            if temperature == 0.0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            out = torch.cat([out, nxt], dim=1)
            feed = nxt
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
