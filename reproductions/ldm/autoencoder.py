"""The perceptual compression stage of latent diffusion (Rombach et al., arXiv 2112.10752,
Section 3.1 and Appendix G): a convolutional autoencoder x -> z = E(x) -> x~ = D(z) that
downsamples by f = H / h = 2^m, KL-regularised ("KL-reg.": a slight KL penalty of the learned latent
towards a standard normal, as in a VAE, so that the latent space has no arbitrarily high variance).

- the encoder outputs the mean and log-variance of a diagonal Gaussian q_E(z | x) with
  `z_channels` channels at (H / f) x (W / f);
- L_rec: the L1 distance |x - D(z)| of a draw z ~ q_E(z | x) (reparameterised);
- L_reg, the KL term: KL(q_E(z | x) || N(0, I)) = 1/2 sum (mu^2 + sigma^2 - 1 - log sigma^2),
  weighted by `kl_weight` (the paper: about 1e-6);
- Appendix G's objective (eq. (25)) adds a perceptual loss (LPIPS) and a patch-based adversarial
  term D_psi; this implementation leaves both out (listed as deviations in the spec), so that the
  stage is L_rec + kl_weight * L_reg alone.

The blocks follow the released code's layout (ResNet blocks with group normalisation and swish,
strided convolutions down, nearest-neighbour upsampling + convolution up), without attention.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """A residual block: GroupNorm, swish, 3x3 convolution, twice."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class DiagonalGaussian:
    """q_E(z | x) = N(mean, diag(exp(logvar))); the log-variance clamped to [-30, 20] as the released code does."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, device=generator.device if generator else None)
        return self.mean + self.std * eps.to(self.mean.device)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per example, summed over the latent's elements."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class KLAutoencoder(nn.Module):
    def __init__(self, in_channels: int, ch: int, ch_mult: tuple[int, ...], z_channels: int, groups: int):
        super().__init__()
        self.f = 2 ** (len(ch_mult) - 1)  # one strided convolution between consecutive levels
        enc: list[nn.Module] = [nn.Conv2d(in_channels, ch * ch_mult[0], 3, padding=1)]
        c = ch * ch_mult[0]
        for i, mult in enumerate(ch_mult):
            enc.append(Block(c, ch * mult, groups))
            c = ch * mult
            if i != len(ch_mult) - 1:
                enc.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        enc += [Block(c, c, groups), nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv2d(c, 2 * z_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(z_channels, c, 3, padding=1), Block(c, c, groups)]
        for i, mult in reversed(list(enumerate(ch_mult))):
            dec.append(Block(c, ch * mult, groups))
            c = ch * mult
            if i != 0:
                dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        dec += [nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def loss(self, x: torch.Tensor, kl_weight: float, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_rec + kl_weight * L_reg for a batch x in [-1, 1]; L_rec is the per-example L1 summed over
        pixels, averaged over the batch, as the released code's `rec_loss` sum before the KL is added."""
        q = self.encode(x)
        rec = (x - self.decode(q.sample(generator))).abs().flatten(1).sum(1).mean()
        kl = q.kl().mean()
        return rec + kl_weight * kl, {"rec_l1": rec.detach() / x[0].numel(), "kl": kl.detach()}
