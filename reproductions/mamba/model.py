"""The Mamba block (Figure 3, right) and a language model of stacked blocks, with the
recurrent decoding step of Section 3.5.

A block, on x (b, L, d_model), with E = expand and ED = E * d_model channels:

    x, z = in_proj(x)                                  two branches of ED channels
    x = SiLU(conv1d(x))                                causal depthwise convolution (kernel d_conv)
    Delta, B, C = s_Delta(x), s_B(x), s_C(x)           Algorithm 2: s_B = Linear_N, s_C = Linear_N,
    Delta = softplus(Parameter + s_Delta(x))           s_Delta = Broadcast_D(Linear_1) (rank dt_rank)
    y = SSM(A, B, C, D)(x, Delta)                      the selective scan (scan.py, eq. 2 and 4)
    out = out_proj(y * SiLU(z))                        the multiplicative gate

With `selective=False` (the LTI ablation: Algorithm 1, the S4D-real layer inside the same block)
Delta (ED,), B and C (ED, N) are parameters and the SSM is computed as a convolution. The
parameter names and initialisation follow the authors' `mamba_simple.py` (A = -(1, ..., N) per
channel, S4D-real; Delta's bias the inverse softplus of a log-uniform draw in [dt_min, dt_max];
Delta's projection uniform in +-dt_rank^-0.5), so a block's weights copy to and from
transformers' `MambaMixer`, which the tests compare against.

The model: token embedding, n_layer residual blocks x + Mixer(RMSNorm(x)), a final RMSNorm and the
embedding's transpose as the output layer (the authors' MambaLMHeadModel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from reproductions.mamba.scan import lti_convolution, selective_scan, ssm_step


@dataclass
class MambaConfig:
    vocab_size: int = 18
    d_model: int = 64
    n_layer: int = 2
    d_state: int = 16          # N
    expand: int = 2            # E
    d_conv: int = 4
    dt_rank: int = 0           # 0: ceil(d_model / 16), as the authors' "auto"
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    selective: bool = True     # False: the LTI ablation (Delta, B, C parameters)
    chunk: int = 64            # time steps per chunk of the scan's recomputation
    pad_vocab_multiple: int = 1

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    @property
    def padded_vocab(self) -> int:
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m


def _dt_bias(cfg: MambaConfig, n: int) -> torch.Tensor:
    """Inverse softplus of Delta drawn log-uniform in [dt_min, dt_max] (mamba_simple.py)."""
    dt = torch.exp(torch.rand(n) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
    dt = dt.clamp(min=cfg.dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


class MambaMixer(nn.Module):
    """One Mamba block's mixer (Figure 3): projections, causal convolution, SSM, gate."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        d, ed, n = cfg.d_model, cfg.d_inner, cfg.d_state
        self.in_proj = nn.Linear(d, 2 * ed, bias=False)
        self.conv1d = nn.Conv1d(ed, ed, cfg.d_conv, groups=ed, padding=cfg.d_conv - 1, bias=True)
        if cfg.selective:   # Algorithm 2: Delta, B, C functions of the input
            self.x_proj = nn.Linear(ed, cfg.rank + 2 * n, bias=False)
            self.dt_proj = nn.Linear(cfg.rank, ed, bias=True)
            nn.init.uniform_(self.dt_proj.weight, -cfg.rank ** -0.5, cfg.rank ** -0.5)
            with torch.no_grad():
                self.dt_proj.bias.copy_(_dt_bias(cfg, ed))
        else:               # Algorithm 1 (S4D-real): Delta, B, C parameters
            self.dt_bias = nn.Parameter(_dt_bias(cfg, ed))
            self.B = nn.Parameter(torch.ones(ed, n))
            self.C = nn.Parameter(torch.randn(ed, n))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(ed, 1))  # S4D-real
        self.D = nn.Parameter(torch.ones(ed))
        self.out_proj = nn.Linear(ed, d, bias=False)

    def _ssm_params(self, x: torch.Tensor):
        """Delta (softplus applied), B, C for x (..., ED): Algorithm 2, lines 2-5, or Algorithm 1's."""
        if not self.cfg.selective:
            return F.softplus(self.dt_bias), self.B, self.C
        dt, B, C = self.x_proj(x).split([self.cfg.rank, self.cfg.d_state, self.cfg.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C  # tau_Delta = softplus, Delta's parameter the bias

    def forward(self, hidden: torch.Tensor, return_state: bool = False):
        L = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        conv_in = x.transpose(1, 2)
        x = F.silu(self.conv1d(conv_in)[..., :L]).transpose(1, 2)
        A = -torch.exp(self.A_log.float())
        delta, B, C = self._ssm_params(x)
        if self.cfg.selective or return_state:
            y, h = selective_scan(x, delta, A, B, C, self.D, chunk=self.cfg.chunk, return_state=True)
        else:  # time-invariant: the convolution form (eq. 3) trains faster than the scan
            y, h = lti_convolution(x, delta, A, B, C, self.D), None
        out = self.out_proj(y * F.silu(z))
        if not return_state:
            return out
        k = self.cfg.d_conv - 1
        conv_state = F.pad(conv_in, (max(0, k - L), 0))[..., -k:]  # the last d_conv - 1 inputs
        return out, {"conv": conv_state, "ssm": h}

    def step(self, hidden: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """One token (b, d_model) with the state of the tokens before it: constant time and memory
        in the context length (Section 3.5, the recurrent mode)."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        window = torch.cat([state["conv"], x[..., None]], dim=-1)          # (b, ED, d_conv)
        x = F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        A = -torch.exp(self.A_log.float())
        delta, B, C = self._ssm_params(x)
        if self.cfg.selective:
            B, C = B[:, None, :], C[:, None, :]
        else:
            delta = delta.expand_as(x)
        y, h = ssm_step(state["ssm"], x, delta, A, B, C, self.D)
        return self.out_proj(y * F.silu(z)), {"conv": window[..., 1:], "ssm": h}


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class ResidualBlock(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.norm, self.mixer = RMSNorm(cfg.d_model), MambaMixer(cfg)

    def forward(self, x, return_state: bool = False):
        if not return_state:
            return x + self.mixer(self.norm(x))
        y, state = self.mixer(self.norm(x), return_state=True)
        return x + y, state

    def step(self, x, state):
        y, state = self.mixer.step(self.norm(x), state)
        return x + y, state


class MambaLM(nn.Module):
    """Embedding, residual Mamba blocks, final RMSNorm, tied output layer."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.padded_vocab, cfg.d_model)
        self.layers = nn.ModuleList(ResidualBlock(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        for name, p in self.named_parameters():  # GPT-2's scaled residual init, as mamba_simple's _init_weights
            if name.endswith("out_proj.weight"):
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                with torch.no_grad():
                    p /= math.sqrt(cfg.n_layer)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm_f(x), self.embedding.weight)  # tied to the embedding

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embedding(idx)
        for layer in self.layers:
            x = layer(x)
        return self.logits(x)

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """Logits for a prompt and the per-layer states after it (parallel scan)."""
        x, states = self.embedding(idx), []
        for layer in self.layers:
            x, s = layer(x, return_state=True)
            states.append(s)
        return self.logits(x), states

    @torch.no_grad()
    def step(self, token: torch.Tensor, states: list[dict]) -> tuple[torch.Tensor, list[dict]]:
        """Logits (b, vocab) for the next token after `token` (b,), and the new states."""
        x, new = self.embedding(token), []
        for layer, s in zip(self.layers, states):
            x, s = layer.step(x, s)
            new.append(s)
        return self.logits(x), new
