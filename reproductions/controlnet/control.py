"""ControlNet (Zhang, Rao and Agrawala, "Adding Conditional Control to Text-to-Image Diffusion
Models", arXiv 2302.05543): the control branch on the latent diffusion model's U-Net
(reproductions.ldm, imported; the U-Net is DDPM's).

- Eq. (1)-(2): a network block F(x; Theta) is locked and a trainable copy F(.; Theta_c) is fed the
  input plus the condition through a zero convolution, its output joined back through another:
      y_c = F(x; Theta) + Z(F(x + Z(c; Theta_z1); Theta_c); Theta_z2),
  Z a 1x1 convolution with weight and bias initialised to zeros, so that y_c = y at the start of
  training (tested exactly).
- Section 3.2 (Figure 3): on Stable Diffusion's U-Net the trainable copy is of the 12 encoder blocks
  and the middle block; its outputs go through zero convolutions and are added to the 12 skip
  connections and to the middle block of the locked U-Net. Here: a copy of every encoder output of
  DDPM's U-Net that feeds a skip connection (the input convolution's, each residual/attention
  block's, each downsampling's) and of the middle block.
- The condition encoder E (Section 3.2): image-space conditions (edge maps, masks) go to the latent
  resolution through 4x4 convolutions of stride 2 with ReLU (16, 32, 64, ... channels), then a zero
  convolution into the copy's first features (Z(c; Theta_z1)).
- Ablations (Section 4.2, Figure 8 and Table 2): "lite", a shallow condition path (one convolution
  per joined feature instead of the trainable copy), and "no_zero", the zero convolutions replaced by
  standard convolutions with their default random initialisation.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.tasks.edges import canny_edges  # noqa: F401  (the condition: OpenCV's Canny)
from reproductions.ldm.ldm import ClassConditionalUNet

VARIANTS = ("full", "lite", "no_zero")


def zero_conv(c_in: int, c_out: int, zero: bool = True) -> nn.Conv2d:
    """Z(.; Theta_z): a 1x1 convolution, weight and bias zeros (or left at the default random init)."""
    conv = nn.Conv2d(c_in, c_out, 1)
    if zero:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return conv


class ConditionEncoder(nn.Module):
    """E(c): log2(f) convolutions of kernel 4 and stride 2 with ReLU (f = 1: one 3x3 convolution),
    channels 16, 32, 64, ...; then a 3x3 convolution to `out_channels` features at the latent size."""

    def __init__(self, in_channels: int, out_channels: int, f: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for k in range(int(math.log2(f))):
            layers += [nn.Conv2d(c, 16 * 2 ** k, 4, stride=2, padding=1), nn.ReLU()]
            c = 16 * 2 ** k
        if not layers:
            layers += [nn.Conv2d(c, 16, 3, padding=1), nn.ReLU()]
            c = 16
        layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c)


def skip_shapes(unet) -> list[tuple[int, int]]:
    """(channels, downsampling) of each feature DDPM's U-Net keeps for a skip connection, in the
    order its forward appends them."""
    out = [(unet.ch, 1)]
    ds = 1
    for level, down in zip(unet.down, unet.downsample):
        for res in level.res:
            out.append((res.conv1.out_channels, ds))
        if not isinstance(down, nn.Identity):
            ds *= 2
            out.append((down.out_channels, ds))
    return out


class ControlNet(nn.Module):
    """The locked base eps_theta(z_t, t, y) with the control branch: eps(z_t, t, y, c)."""

    def __init__(self, base: ClassConditionalUNet, cond_channels: int, f: int, variant: str = "full"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"controlnet: variant {variant!r} not in {VARIANTS}")
        self.variant = variant
        self.base = base.requires_grad_(False)
        unet = base.unet
        zero = variant != "no_zero"
        self.skips = skip_shapes(unet)
        mid_channels = unet.mid2.conv1.out_channels
        self.hint = ConditionEncoder(cond_channels, unet.ch, f)
        self.hint_zero = zero_conv(unet.ch, unet.ch, zero)            # Z(c; Theta_z1)
        self.out_zero = nn.ModuleList(zero_conv(c, c, zero) for c, _ in self.skips)  # Z(.; Theta_z2) per skip
        self.mid_zero = zero_conv(mid_channels, mid_channels, zero)
        if variant == "lite":
            self.copy = None
            self.lite = nn.ModuleList(nn.Conv2d(unet.ch, c, 3, padding=1) for c, _ in self.skips)
            self.lite_mid = nn.Conv2d(unet.ch, mid_channels, 3, padding=1)
        else:
            self.copy = copy.deepcopy(base).requires_grad_(True)    # the trainable copy, initialised from the base
            for name in ("up", "upsample"):                          # only its encoder and middle block are used
                setattr(self.copy.unet, name, nn.ModuleList())
            self.copy.unet.norm_out = self.copy.unet.conv_out = nn.Identity()
        self._pending: list[torch.Tensor] = []
        self._mid: torch.Tensor | None = None
        for level in unet.up:
            for res in level.res:
                res.register_forward_pre_hook(self._add_to_skip)
        unet.mid2.register_forward_hook(self._add_to_mid)

    # the locked U-Net, with the control residuals added where its forward consumes the skips
    def _add_to_skip(self, module, args):
        if not self._pending:
            return None
        x, temb = args
        r = self._pending.pop()
        c = r.shape[1]
        return torch.cat([x[:, :-c], x[:, -c:] + r], dim=1), temb

    def _add_to_mid(self, module, args, out):
        return out if self._mid is None else out + self._mid

    def control(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cond: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The residuals for each skip connection and for the middle block."""
        hint = self.hint_zero(self.hint(cond))
        if self.copy is None:  # lite: one convolution per joined feature, from the condition alone
            feats = [conv(F.avg_pool2d(hint, ds) if ds > 1 else hint) for conv, (_, ds) in zip(self.lite, self.skips)]
            mid = self.lite_mid(F.avg_pool2d(hint, self.skips[-1][1]) if self.skips[-1][1] > 1 else hint)
        else:
            u = self.copy.unet
            self.copy.unet.temb.labels = y
            try:
                temb = u.temb(_sinusoid(t, u.ch))
            finally:
                self.copy.unet.temb.labels = None
            h = u.conv_in(x) + hint                                   # x + Z(c; Theta_z1), at the first features
            feats = [h]
            for level, down in zip(u.down, u.downsample):
                for res, attn in zip(level.res, level.attn):
                    h = attn(res(h, temb))
                    feats.append(h)
                if not isinstance(down, nn.Identity):
                    h = down(h)
                    feats.append(h)
            mid = u.mid2(u.mid_attn(u.mid1(h, temb)), temb)
        return [z(h) for z, h in zip(self.out_zero, feats)], self.mid_zero(mid)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        residuals, mid = self.control(x, t, y, cond)
        self._pending, self._mid = list(residuals), mid
        try:
            return self.base(x, t, y)
        finally:
            self._pending, self._mid = [], None

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    from reproductions.ddpm.unet import timestep_embedding

    return timestep_embedding(t, dim)
