"""Sampling the latent diffusion model: classifier-free guidance and the DDIM sampler.

- Classifier-free guidance (Ho and Salimans, arXiv 2207.12598, eq. (6); the LDM paper's Section 4.3
  and Table 3 "-G" rows): one network is trained both conditionally and, with the label dropped to a
  null class with probability p_uncond, unconditionally; sampling uses
      eps~(z_t, c) = eps(z_t, null) + s * (eps(z_t, c) - eps(z_t, null)),
  so s = 1 is the plain conditional model and s > 1 pushes towards the class (the LDM paper's
  convention for the scale s, e.g. s = 1.5 in Table 3).
- DDIM (Song, Meng and Ermon, arXiv 2010.02502), the sampler the LDM paper uses throughout: on a
  sub-sequence tau_1 < ... < tau_S of the T training steps, eq. (12):
      x_{tau_{i-1}} = sqrt(a_{i-1}) x0_pred + sqrt(1 - a_{i-1} - sigma_i^2) eps + sigma_i z,
      x0_pred = (x_{tau_i} - sqrt(1 - a_i) eps) / sqrt(a_i),   a_i = abar_{tau_i},
  with eq. (16)'s sigma_i = eta sqrt((1 - a_{i-1}) / (1 - a_i)) sqrt(1 - a_i / a_{i-1}) (eta = 0:
  deterministic DDIM; eta = 1: DDPM-like). The sub-sequence is the released code's "uniform"
  one: every (T // S)-th step, shifted by one (tau = 1, 1 + T//S, ...; indices into the T-step
  schedule counted from 0), and the last step goes to a_0 = abar at index 0, not to 1.
- Ancestral sampling is DDPM's Algorithm 2 (reproductions.ddpm.diffusion.p_sample_loop) with the
  guided eps.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from reproductions.ddpm.diffusion import GaussianDiffusion

CondEps = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # eps(x_t, t index, labels)


def guided_eps(model: CondEps, labels: torch.Tensor, null: int, scale: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """eps~(x_t, t) of classifier-free guidance for fixed labels; one conditional pass when scale == 1,
    else the conditional and unconditional passes as one batch of 2N."""
    if scale == 1.0:
        return lambda x, i: model(x, i, labels)

    def eps(x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        both = model(torch.cat([x, x]), torch.cat([i, i]), torch.cat([labels, torch.full_like(labels, null)]))
        cond, uncond = both.chunk(2)
        return uncond + scale * (cond - uncond)
    return eps


def ddim_timesteps(T: int, steps: int) -> np.ndarray:
    """The released code's uniform sub-sequence, increasing: 1, 1 + c, 1 + 2c, ... with c = T // steps."""
    if not 1 <= steps <= T:
        raise ValueError(f"ddim: need 1 <= steps <= T, got steps={steps}, T={T}")
    c = T // steps
    return np.arange(0, T, c)[:steps] + 1 if c > 1 else np.arange(T)


def ddim_coefficients(abar: torch.Tensor, taus: np.ndarray, eta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a_i = abar[tau_i], a_{i-1} (abar[0] before the first), sigma_i of eq. (16), in float64."""
    abar = abar.double().cpu()
    a = abar[torch.from_numpy(taus)]
    a_prev = torch.cat([abar[:1], abar[torch.from_numpy(taus[:-1])]])
    sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
    return a, a_prev, sigma


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a: float, a_prev: float, sigma: float,
              noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of eq. (12): (x at the previous step, x0_pred)."""
    x0 = (x - (1.0 - a) ** 0.5 * eps) / a ** 0.5
    out = a_prev ** 0.5 * x0 + (1.0 - a_prev - sigma ** 2) ** 0.5 * eps
    if sigma > 0:
        out = out + sigma * noise
    return out, x0


@torch.no_grad()
def ddim_sample(eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], diffusion: GaussianDiffusion,
                shape: tuple[int, ...], steps: int, generator: torch.Generator, device: torch.device,
                eta: float = 0.0) -> torch.Tensor:
    """x_T ~ N(0, I), then `steps` DDIM updates down to x_0 (the released code's DDIMSampler)."""
    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=generator.device).to(device)

    taus = ddim_timesteps(diffusion.T, steps)
    a, a_prev, sigma = ddim_coefficients(diffusion.alphas_cumprod, taus, eta)
    x = randn()
    for k in reversed(range(len(taus))):
        idx = torch.full((shape[0],), int(taus[k]), device=device, dtype=torch.long)
        noise = randn() if sigma[k] > 0 else None
        x, _ = ddim_step(x, eps_model(x, idx), float(a[k]), float(a_prev[k]), float(sigma[k]), noise)
    return x


@torch.no_grad()
def ancestral_sample(eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], diffusion: GaussianDiffusion,
                     shape: tuple[int, ...], generator: torch.Generator, device: torch.device, clip_x0: bool) -> torch.Tensor:
    """DDPM's Algorithm 2 over all T steps (reproductions.ddpm)."""
    return diffusion.p_sample_loop(eps_model, shape, generator, device, clip_x0)[0]
