"""The noise-prediction network eps_theta(x_t, t) of DDPM (Ho et al., arXiv 2006.11239, Appendix B).

"a U-Net backbone similar to an unmasked PixelCNN++ ... based on a Wide ResNet": at each resolution
`num_res_blocks` residual blocks (group normalisation, swish, dropout, the time embedding added in
between the two convolutions), self-attention at the resolutions in `attn_resolutions`, strided
convolutions down and nearest-neighbour upsampling + convolution up, and the time t given as the
Transformer's sinusoidal position embedding. The block layout and the zero-initialised output
convolutions follow the authors' released code, so the CIFAR-10 configuration (ch 128, multipliers
1, 2, 2, 2, two blocks per resolution, attention at 16x16) has the paper's 35.7M parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al., Section 3.5): sin in the first
    half of the channels, cos in the second, frequencies 10000^(-i / (dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def zero_(module: nn.Module) -> nn.Module:
    """Zero-initialised last layers of residual branches and of the output (the authors' code)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj_out = zero_(nn.Conv2d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)  # each B x HW x C
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Level(nn.Module):
    """The residual blocks (each optionally followed by attention) of one resolution."""

    def __init__(self, channels_in: list[int], c_out: int, temb_dim: int, dropout: float, groups: int, attn: bool):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(c, c_out, temb_dim, dropout, groups) for c in channels_in)
        self.attn = nn.ModuleList(AttnBlock(c_out, groups) if attn else nn.Identity() for _ in channels_in)


class UNet(nn.Module):
    def __init__(self, in_channels: int, image_size: int, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int,
                 attn_resolutions: tuple[int, ...], dropout: float, groups: int):
        super().__init__()
        self.ch = ch
        temb_dim = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        # Down: remember every block's output channels for the skip connections.
        skips, c, res = [ch], ch, image_size
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            c_out = ch * mult
            level = Level([c] + [c_out] * (num_res_blocks - 1), c_out, temb_dim, dropout, groups, res in attn_resolutions)
            self.down.append(level)
            c = c_out
            skips += [c] * num_res_blocks
            last = i == len(ch_mult) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
            if not last:
                skips.append(c)
                res //= 2

        self.mid1 = ResBlock(c, c, temb_dim, dropout, groups)
        self.mid_attn = AttnBlock(c, groups)
        self.mid2 = ResBlock(c, c, temb_dim, dropout, groups)

        # Up: num_res_blocks + 1 blocks per level, each fed the concatenation with one skip.
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, mult in reversed(list(enumerate(ch_mult))):
            c_out = ch * mult
            ins = []
            for _ in range(num_res_blocks + 1):
                ins.append(c + skips.pop())
                c = c_out
            self.up.append(Level(ins, c_out, temb_dim, dropout, groups, res in attn_resolutions))
            self.upsample.append(nn.Conv2d(c, c, 3, padding=1) if i != 0 else nn.Identity())
            if i != 0:
                res *= 2
        self.norm_out = nn.GroupNorm(groups, c)
        self.conv_out = zero_(nn.Conv2d(c, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.temb(timestep_embedding(t, self.ch))
        hs = [self.conv_in(x)]
        h = hs[-1]
        for level, down in zip(self.down, self.downsample):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(h, temb))
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for level, up in zip(self.up, self.upsample):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(torch.cat([h, hs.pop()], dim=1), temb))
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
