"""The Vision Transformer (Dosovitskiy et al., arXiv 2010.11929, Section 3.1), eq. (1)-(4):

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos        (1)  patches, linearly embedded
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                      (2)  pre-LN encoder block
    z_l  = MLP(LN(z'_l)) + z'_l                            (3)
    y    = LN(z_L^0)                                       (4)  the class token's final state

The classification head on y is an MLP with one tanh hidden layer when pre-training and a single
linear layer when fine-tuning (Section 3.1); `head_hidden=0` gives the linear head.

The model is also an image encoder for the papers built on it (MAE, CLIP, SAM 2, LLaVA):
`embed` (eq. 1 without the class token), `encode` (any subset of patch tokens through the
encoder), `features` (y) and `patch_tokens` (z_L^1..N after the final LN).

The pre-LN block here is the Transformer encoder block of Vaswani et al. with the LayerNorm moved
before each sub-layer; it is written here because the vision track was built alongside the
language track's block, and it should later come from `reproductions/transformer`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.contract import SafetensorsModule


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """N x C x H x W -> N x L x (P*P*C): row-major patches, each flattened as (P, P, C)."""
    n, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"patchify: image size {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """The inverse of `patchify` for a square grid of patches."""
    n, length, _ = x.shape
    p, g = patch_size, int(round(length ** 0.5))
    if g * g != length:
        raise ValueError(f"unpatchify: {length} patches do not form a square grid")
    x = x.reshape(n, g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(n, channels, g * p, g * p)


class Attention(nn.Module):
    """Multi-head self-attention, MSA in eq. (2)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d_head)) v, per head
        return self.drop(self.proj(x.transpose(1, 2).reshape(n, t, d)))


class Block(nn.Module):
    """One pre-LN encoder block, eq. (2)-(3); the MLP is two layers with a GELU."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))   # (2)
        return x + self.mlp(self.norm2(x))  # (3)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal(0.02) linear weights, zero biases, unit LayerNorms (the reference code's)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ViT(SafetensorsModule):
    def __init__(self, image_size: int, patch_size: int, channels: int, num_classes: int, dim: int, depth: int,
                 heads: int, mlp_dim: int, dropout: float = 0.0, head_hidden: int = 0, pool: str = "cls"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"ViT: image_size {image_size} is not a multiple of patch_size {patch_size}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"ViT: pool must be 'cls' or 'mean', got {pool!r}")
        self.image_size, self.patch_size, self.channels, self.pool = image_size, patch_size, channels, pool
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Linear(patch_size * patch_size * channels, dim)       # E, eq. (1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))                       # x_class
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, dim))    # E_pos, learned 1-D
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)                                     # LN of eq. (4)
        if head_hidden:
            self.head = nn.Sequential(nn.Linear(dim, head_hidden), nn.Tanh(), nn.Linear(head_hidden, num_classes))
        else:
            self.head = nn.Linear(dim, num_classes)
        init_weights(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        last = self.head[-1] if head_hidden else self.head
        nn.init.zeros_(last.weight)  # the reference code starts the (last) head layer at zero

    @property
    def dim(self) -> int:
        return self.cls_token.shape[-1]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Eq. (1) for the patches: x_p^i E + E_pos^i, N x L x D. Pixels in [0, 1] are mapped to
        [-1, 1] first, as the reference code does."""
        x = patchify(images * 2.0 - 1.0, self.patch_size)
        return self.patch_embed(x) + self.pos_embed[:, 1:]

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend the class token (with its position embedding) to any set of embedded patch
        tokens and run the encoder, eq. (2)-(3), then the final LN: N x (1 + T) x D."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = self.drop(torch.cat([cls, tokens], dim=1))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(self.embed(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """y of eq. (4) (pool='cls'), or the mean of the patch tokens (pool='mean'): N x D."""
        z = self.forward_features(images)
        return z[:, 0] if self.pool == "cls" else z[:, 1:].mean(1)

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's output at every patch, N x L x D, in patch order."""
        return self.forward_features(images)[:, 1:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    @torch.no_grad()
    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return self(images.to(self.cls_token.device))
        finally:
            self.train(was_training)
