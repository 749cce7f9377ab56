"""The FlashAttention forward pass as a Triton kernel, for GPUs (the same algorithm as `flash.py`:
one program per block of queries of one (batch, head), looping over key/value blocks with the
online softmax, keeping only O and the log-sum-exp L). The backward pass recomputes the
probabilities from L with `flash.flash_backward`.

On a machine without a GPU the kernel runs in Triton's interpreter (`TRITON_INTERPRET=1`, set
before `triton` is imported), which is how the tests check it. Matrix products use IEEE fp32
(`input_precision="ieee"`), not TF32, so the kernel is exact to fp32 rounding.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from reproductions.flash_attention.flash import flash_backward


@triton.jit
def _flash_forward_kernel(Q, K, V, O, L, n_q, n_k, offset, tau,
                          CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q = tl.load(Q + bh * n_q * D + offs_m[:, None] * D + offs_d[None, :], mask=offs_m[:, None] < n_q, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    hi = n_k
    if CAUSAL:
        hi = tl.minimum(n_k, (start_m + 1) * BLOCK_M + offset)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = offs_n[:, None] < n_k
        k = tl.load(K + bh * n_k * D + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * tau
        valid = offs_n[None, :] < n_k
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None] + offset)
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        rescale = tl.exp(m_i - m_new)
        l_i = rescale * l_i + tl.sum(p, 1)
        v = tl.load(V + bh * n_k * D + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        acc = acc * rescale[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    acc = acc / l_i[:, None]
    row_mask = offs_m < n_q
    tl.store(O + bh * n_q * D + offs_m[:, None] * D + offs_d[None, :], acc, mask=row_mask[:, None])
    tl.store(L + bh * n_q + offs_m, m_i + tl.log(l_i), mask=row_mask)


def triton_forward(q, k, v, causal: bool = False, block_m: int = 64, block_n: int = 64):
    """O and L for fp32 q, k, v of shape (..., n, d); d a power of two >= 16."""
    *lead, n_q, d = q.shape
    n_k = k.size(-2)
    if d < 16 or d & (d - 1):
        raise ValueError(f"the Triton kernel needs a head size that is a power of two >= 16, got {d}")
    if causal and n_k < n_q:
        raise ValueError(f"causal attention needs at least as many keys ({n_k}) as queries ({n_q})")
    q3, k3, v3 = (t.reshape(-1, t.size(-2), d).float().contiguous() for t in (q, k, v))
    out = torch.empty_like(q3)
    lse = torch.empty(q3.shape[:-1], dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(n_q, block_m), q3.size(0))
    _flash_forward_kernel[grid](q3, k3, v3, out, lse, n_q, n_k, n_k - n_q, 1.0 / math.sqrt(d),
                                CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, D=d)
    return out.reshape(*lead, n_q, d).to(q.dtype), lse.reshape(*lead, n_q)


class TritonFlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool = False):
        out, lse = triton_forward(q, k, v, causal)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse = ctx.saved_tensors
        return (*flash_backward(q, k, v, out, lse, d_out.contiguous(), ctx.causal), None)


def triton_flash_attention(q, k, v, mask=None, causal: bool = False):
    if mask is not None:
        raise ValueError("triton_flash_attention supports causal masking only, not an arbitrary mask")
    return TritonFlashAttention.apply(q, k, v, causal)
