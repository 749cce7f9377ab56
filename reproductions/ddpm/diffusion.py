"""The Gaussian diffusion of DDPM (Ho, Jain and Abbeel, arXiv 2006.11239), its equations by number.

- forward process, eq. (2):   q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), betas linear from
                              beta_1 = 1e-4 to beta_T = 0.02, T = 1000 (Section 4);
- eq. (4), in closed form:    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),  abar_t = prod_{s<=t} (1 - beta_s);
- eq. (6)-(7), the posterior: q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I) with
                              mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
                              beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t;
- eq. (11), the reverse mean: mu_theta = (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(alpha_t), which is
                              mu~_t at the x_0 that eq. (4) gives back from eps_theta;
- eq. (14), L_simple:         E_{t, x_0, eps} || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2 (Algorithm 1);
- Algorithm 2, sampling:      x_{t-1} = mu_theta(x_t, t) + sigma_t z, z ~ N(0, I) for t > 1, z = 0 at t = 1, with
                              sigma_t^2 = beta_t (Section 3.2 finds beta_t and beta~_t alike).

The paper counts t = 1..T; tensors here are indexed by i = t - 1 in 0..T-1. The schedule is computed in
float64 and stored in float32.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def linear_betas(T: int, beta_1: float, beta_T: float) -> torch.Tensor:
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def _at(values: torch.Tensor, i: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """values[i] per batch element, shaped to broadcast against x."""
    return values[i].reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


class GaussianDiffusion(nn.Module):
    def __init__(self, T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02):
        super().__init__()
        self.T = T
        betas = linear_betas(T, beta_1, beta_T)
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        buffers = {
            "betas": betas,
            "alphas_cumprod": abar,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
            "sqrt_recip_alphas_cumprod": abar.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1.0).sqrt(),
            # eq. (7)
            "posterior_variance": (1.0 - abar_prev) / (1.0 - abar) * betas,
            "posterior_mean_coef1": abar_prev.sqrt() * betas / (1.0 - abar),
            "posterior_mean_coef2": alphas.sqrt() * (1.0 - abar_prev) / (1.0 - abar),
            # Algorithm 2's sigma_t^2 = beta_t
            "sigma": betas.sqrt(),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    def q_sample(self, x0: torch.Tensor, i: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """A draw of x_t ~ q(x_t | x_0), eq. (4), reparameterised with eps ~ N(0, I)."""
        return _at(self.sqrt_alphas_cumprod, i, x0) * x0 + _at(self.sqrt_one_minus_alphas_cumprod, i, x0) * eps

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0), eq. (6)-(7)."""
        mean = _at(self.posterior_mean_coef1, i, xt) * x0 + _at(self.posterior_mean_coef2, i, xt) * xt
        return mean, _at(self.posterior_variance, i, xt)

    def predict_x0(self, xt: torch.Tensor, i: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Eq. (4) solved for x_0: x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        return _at(self.sqrt_recip_alphas_cumprod, i, xt) * xt - _at(self.sqrt_recipm1_alphas_cumprod, i, xt) * eps

    def p_mean(self, eps_model: EpsModel, xt: torch.Tensor, i: torch.Tensor, clip_x0: bool) -> torch.Tensor:
        """mu_theta(x_t, t): the posterior mean (7) at the x_0 predicted from eps_theta, which is eq. (11).
        With `clip_x0` the prediction is first clipped to the data range [-1, 1], as the authors'
        released code does when sampling; without it this is Algorithm 2's mean exactly."""
        x0 = self.predict_x0(xt, i, eps_model(xt, i))
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        return self.q_posterior(x0, xt, i)[0]

    def loss(self, eps_model: EpsModel, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """L_simple, eq. (14), for one batch: t ~ Uniform{1..T}, eps ~ N(0, I) (Algorithm 1)."""
        i = torch.randint(0, self.T, (x0.shape[0],), generator=generator, device=generator.device).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
        return (eps - eps_model(self.q_sample(x0, i, eps), i)).pow(2).mean()

    @torch.no_grad()
    def p_sample_loop(self, eps_model: EpsModel, shape: tuple[int, ...], generator: torch.Generator,
                      device: torch.device, clip_x0: bool = True, keep: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Algorithm 2: x_T ~ N(0, I), then T ancestral steps down to x_0. Returns x_0 and the states
        x_t for each paper-time t in `keep` (t = T is the starting noise, t = 0 the sample)."""
        def randn() -> torch.Tensor:
            return torch.randn(shape, generator=generator, device=generator.device).to(device)

        x = randn()
        kept = {self.T: x.cpu()} if self.T in keep else {}
        for i in reversed(range(self.T)):
            idx = torch.full((shape[0],), i, device=device, dtype=torch.long)
            mean = self.p_mean(eps_model, x, idx, clip_x0)
            x = mean + self.sigma[i] * randn() if i > 0 else mean
            if i in keep:  # x is now x_{t-1} with t - 1 = i
                kept[i] = x.cpu()
        return x, kept
