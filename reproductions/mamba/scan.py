"""The selective scan (S6, Algorithm 2) and its time-invariant ablation, in PyTorch.

The SSM of eq. (1a)/(1b), h'(t) = A h(t) + B x(t), y(t) = C h(t), is discretised with the
zero-order hold of eq. (4) for A, A_bar = exp(Delta A), and with the simplified Euler rule the
paper's own code uses for B, B_bar = Delta B (Section 3.5.2 notes the two agree to first order),
and unrolled as the recurrence of eq. (2a)/(2b):

    h_t = A_bar_t * h_{t-1} + B_bar_t x_t,        y_t = C_t h_t (+ D x_t, the skip of Figure 3).

A is diagonal (S4D-real), one (d, N) matrix; in S6 (Algorithm 2) Delta (b, L, d), B and C
(b, L, N) depend on the token, so the model is no longer time-invariant and cannot be computed as
a convolution. `selective_scan` computes the recurrence as a `torch.autograd.Function` whose
forward keeps, for the backward pass, only its inputs and the state at the start of every chunk
of `chunk` steps: the (b, L, d, N) states are never saved for autograd. The backward pass
recomputes each chunk's states from its starting state (the recomputation of Section 3.3.2) and
runs the adjoint recurrence backwards in time. This is the "hardware-aware" algorithm's memory
behaviour; the kernel fusion into SRAM is a GPU matter that PyTorch on a CPU cannot express.

The ablation (S4D-real, LTI): Delta (d,), B and C (d, N) are parameters. Being time-invariant,
it is also computable as the convolution of eq. (3a)/(3b), y = x * K_bar with
K_bar = (C B_bar, C A_bar B_bar, ..., C A_bar^k B_bar, ...): `lti_convolution`, by FFT, as S4
computes it. The tests check that both forms agree and that the scan equals a naive loop.
"""

from __future__ import annotations

import torch


def _chunk(t: torch.Tensor, s: int, e: int) -> torch.Tensor:
    """Time slice [s, e) of a time-major (L, b, ...) input, or the whole of a time-invariant (d, N) one."""
    return t[s:e] if t.dim() == 3 else t


def _discretise(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, u: torch.Tensor):
    """Time-major (T, b, d, N): dA = exp(Delta A) (eq. 4, zero-order hold) and dBu = Delta B x
    (B_bar x). B: (T, b, N) selective or (d, N) time-invariant."""
    dA = torch.exp(delta[..., None] * A)
    dBu = (delta * u)[..., None] * (B[:, :, None, :] if B.dim() == 3 else B)
    return dA, dBu


def _states_(dA: torch.Tensor, dBu: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """All states of a chunk, h_t = dA_t * h_{t-1} + dBu_t (eq. 2a) from h_{-1} = h, written
    over dBu in place (time-major, so each step touches one contiguous (b, d, N) slice)."""
    dBu[0].addcmul_(dA[0], h)
    for t in range(1, dBu.shape[0]):
        dBu[t].addcmul_(dA[t], dBu[t - 1])
    return dBu


def _contract(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_n x[..., d, n] v[..., n] for a selective v (T, b, N), or v (d, N) time-invariant."""
    return torch.matmul(x, v[..., None]).squeeze(-1) if v.dim() == 3 else (x * v).sum(-1)


def _contract_d(x: torch.Tensor, w: torch.Tensor, selective: bool) -> torch.Tensor:
    """sum_d x[t, b, d, n] w[t, b, d]: (T, b, N) for a selective parameter, else summed over
    (t, b) too: (d, N)."""
    if selective:
        return torch.matmul(x.transpose(-1, -2), w[..., None]).squeeze(-1)
    return (x * w[..., None]).sum((0, 1))


class SelectiveScan(torch.autograd.Function):
    """y = selective_scan(u, delta, A, B, C, D, h0): the recurrence of eq. (2) with a hand-written
    backward pass. Inputs are time-major here: u, delta (L, b, d); B, C (L, b, N) or (d, N).
    Saved for backward: the inputs and one (b, d, N) state per chunk."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, h0, chunk: int):
        L, b, d = u.shape
        h = h0 if h0 is not None else u.new_zeros(b, d, A.shape[1])
        starts, ys = [], []
        for s in range(0, L, chunk):
            e = min(L, s + chunk)
            starts.append(h)
            dA, dBu = _discretise(delta[s:e], A, _chunk(B, s, e), u[s:e])
            hs = _states_(dA, dBu, h)
            ys.append(_contract(hs, _chunk(C, s, e)))  # eq. (2b): y_t = C_t h_t
            h = hs[-1].clone()
        y = torch.cat(ys, 0)
        if D is not None:
            y = y + u * D
        ctx.chunk = chunk
        ctx.has_h0 = h0 is not None
        ctx.save_for_backward(u, delta, A, B, C, D, torch.stack(starts, 0))
        return y, h

    @staticmethod
    def backward(ctx, gy, gh_last):
        u, delta, A, B, C, D, starts = ctx.saved_tensors
        chunk, (L, b, d) = ctx.chunk, u.shape
        sel_B, sel_C = B.dim() == 3, C.dim() == 3
        gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
        gA = torch.zeros_like(A)
        gB, gC = torch.zeros_like(B), torch.zeros_like(C)
        # the gradient reaching h_t from the future: from the returned final state, then carried back
        carry = gh_last if gh_last is not None else u.new_zeros(b, d, A.shape[1])
        for i, s in reversed(list(enumerate(range(0, L, chunk)))):
            e = min(L, s + chunk)
            Bc, Cc, dl, uc, gyc = _chunk(B, s, e), _chunk(C, s, e), delta[s:e], u[s:e], gy[s:e]
            dA, hs = _discretise(dl, A, Bc, uc)
            hs = _states_(dA, hs, starts[i])              # recomputed (Section 3.3.2), never saved by autograd
            # dL/dh_t through y_t = C_t h_t, then the adjoint recurrence gh_t += dA_{t+1} gh_{t+1}
            gh = gyc[..., None] * (Cc[:, :, None, :] if sel_C else Cc)
            gh[-1] += carry
            for t in range(e - s - 2, -1, -1):
                gh[t].addcmul_(dA[t + 1], gh[t + 1])
            carry = dA[0] * gh[0]
            gC_part = _contract_d(hs, gyc, sel_C)
            # h_{t-1} for every t, over hs: dL/d(Delta A) = gh * h_{t-1} * dA (through exp)
            h_prev = torch.cat([starts[i][None], hs[:-1]], 0)
            del hs
            g_dAlog = h_prev.mul_(dA).mul_(gh)
            del dA
            gBu = _contract(gh, Bc)                      # dL/d(Delta x) through Delta B x
            gdelta[s:e] = (g_dAlog * A).sum(-1) + gBu * uc
            gu[s:e] = gBu * dl
            gA += (g_dAlog * dl[..., None]).sum((0, 1))
            gB_part = _contract_d(gh, dl * uc, sel_B)
            if sel_B:
                gB[s:e] = gB_part
            else:
                gB += gB_part
            if sel_C:
                gC[s:e] = gC_part
            else:
                gC += gC_part
        gD = None
        if D is not None:
            gu += gy * D
            gD = (gy * u).sum((0, 1))
        return gu, gdelta, gA, gB, gC, gD, (carry if ctx.has_h0 else None), None


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, h0: torch.Tensor | None = None, chunk: int = 64,
                   return_state: bool = False):
    """The SSM recurrence (eq. 2) over a sequence. u, delta: (b, L, d) (delta already positive,
    softplus applied); A: (d, N), negative; B, C: (b, L, N) for S6 or (d, N) for the LTI
    ablation; D: (d,) skip; h0: (b, d, N) initial state. Returns y (b, L, d), and the final
    state (b, d, N) with `return_state`."""
    if delta.shape != u.shape:
        delta = delta.expand_as(u)
    tm = lambda t: t.transpose(0, 1).contiguous() if t.dim() == 3 else t  # noqa: E731  time-major
    y, h = SelectiveScan.apply(tm(u), tm(delta), A, tm(B), tm(C), D, h0, chunk)
    y = y.transpose(0, 1)
    return (y, h) if return_state else y


def ssm_step(h: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
             C: torch.Tensor, D: torch.Tensor | None = None):
    """One step of the recurrence (eq. 2a, 2b) for decoding: h (b, d, N), u and delta (b, d), B
    and C broadcastable to (b, d, N) (S6: (b, 1, N); LTI: (d, N)). Returns (y (b, d), new h)."""
    h = torch.exp(delta[..., None] * A) * h + (delta * u)[..., None] * B
    y = (h * C).sum(-1)
    return (y + u * D if D is not None else y), h


def lti_kernel(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int) -> torch.Tensor:
    """K_bar[d, k] = sum_n C[d, n] exp(k Delta_d A[d, n]) Delta_d B[d, n]  (eq. 3b), shape (d, L)."""
    k = torch.arange(L, device=A.device, dtype=A.dtype)
    powers = torch.exp((delta[:, None] * A)[..., None] * k)  # (d, N, L): A_bar^k
    return torch.einsum("dn,dnl->dl", C * delta[:, None] * B, powers)


def lti_convolution(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                    D: torch.Tensor | None = None) -> torch.Tensor:
    """The LTI SSM as the causal convolution y = x * K_bar of eq. (3a), by FFT. u: (b, L, d);
    delta: (d,); A, B, C: (d, N)."""
    L = u.shape[1]
    K = lti_kernel(delta, A, B, C, L)
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u.transpose(1, 2), n=n) * torch.fft.rfft(K, n=n), n=n)[..., :L].transpose(1, 2)
    return y + u * D if D is not None else y


__all__ = ["selective_scan", "ssm_step", "lti_convolution", "lti_kernel", "SelectiveScan"]
