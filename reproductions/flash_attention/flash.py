"""FlashAttention (Dao et al., arXiv 2205.14135): exact attention computed block by block, never
materialising the N x N score matrix, in the forward and the backward pass.

Forward (Algorithm 1, with the loops in the order FlashAttention-2 and the Triton tutorial use:
query blocks outside, key/value blocks inside; the arithmetic is the paper's): for a block of
queries Q_i, keep a running row maximum m_i, a running softmax denominator l_i and an unnormalised
output O_i; for each block K_j, V_j:
    S_ij = tau * Q_i K_j^T                              (tau = 1/sqrt(d))
    m_new = max(m_i, rowmax(S_ij))
    P_ij = exp(S_ij - m_new)
    l_i = exp(m_i - m_new) * l_i + rowsum(P_ij)          (the online softmax, §3.1)
    O_i = exp(m_i - m_new) * O_i + P_ij V_j
and at the end O_i / l_i. Only O and the log-sum-exp L_i = m_i + log(l_i) are kept for backward.

Backward (Algorithm 4 / Appendix B.4): recompute P_ij = exp(S_ij - L_i) block by block from Q, K
and L (the recomputation that trades FLOPs for memory), with D_i = rowsum(dO_i * O_i):
    dV_j += P_ij^T dO_i,   dP_ij = dO_i V_j^T,   dS_ij = P_ij * (dP_ij - D_i),
    dQ_i += tau * dS_ij K_j,   dK_j += tau * dS_ij^T Q_i.

Extra memory is O(N d) plus one block of scores, against O(N^2) for naive attention.
"""

from __future__ import annotations

import math

import torch


def _block_mask(i0: int, i1: int, j0: int, j1: int, offset: int, device) -> torch.Tensor | None:
    """Causal mask of one block (query i may see keys <= i + offset), or None if it masks nothing."""
    if j1 - 1 <= i0 + offset:
        return None
    rows = torch.arange(i0, i1, device=device)[:, None] + offset
    return torch.arange(j0, j1, device=device)[None, :] > rows


def _acc(t: torch.Tensor) -> torch.dtype:
    """Accumulate in fp32 (or fp64 for fp64 inputs), whatever the input precision."""
    return torch.promote_types(t.dtype, torch.float32)


def _key_blocks(i0: int, i1: int, n_keys: int, block_k: int, causal: bool, offset: int):
    end = min(n_keys, i1 + offset) if causal else n_keys
    return [(j0, min(j0 + block_k, end)) for j0 in range(0, end, block_k)]


def flash_forward(q, k, v, causal: bool = False, block_q: int = 128, block_k: int = 128):
    """O and the row log-sum-exp L of softmax(tau Q K^T) V, tile by tile."""
    n, n_keys = q.size(-2), k.size(-2)
    offset = n_keys - n  # queries are the last n of n_keys positions (as with a KV cache)
    if causal and offset < 0:
        raise ValueError(f"causal attention needs at least as many keys ({n_keys}) as queries ({n})")
    tau = 1.0 / math.sqrt(q.size(-1))
    out = torch.empty_like(q)
    acc_t = _acc(q)
    lse = torch.empty(q.shape[:-1], dtype=acc_t, device=q.device)
    for i0 in range(0, n, block_q):
        i1 = min(i0 + block_q, n)
        q_i = q[..., i0:i1, :].to(acc_t) * tau
        m = torch.full(q_i.shape[:-1], -math.inf, dtype=acc_t, device=q.device)
        l = torch.zeros_like(m)
        acc = torch.zeros_like(q_i)
        for j0, j1 in _key_blocks(i0, i1, n_keys, block_k, causal, offset):
            s = q_i @ k[..., j0:j1, :].to(acc_t).transpose(-2, -1)
            mask = _block_mask(i0, i1, j0, j1, offset, q.device) if causal else None
            if mask is not None:
                s = s.masked_fill(mask, -math.inf)
            m_new = torch.maximum(m, s.amax(dim=-1))
            p = torch.exp(s - m_new[..., None])
            rescale = torch.exp(m - m_new)
            l = rescale * l + p.sum(dim=-1)
            acc = rescale[..., None] * acc + p @ v[..., j0:j1, :].to(acc_t)
            m = m_new
        out[..., i0:i1, :] = (acc / l[..., None]).to(q.dtype)
        lse[..., i0:i1] = m + torch.log(l)
    return out, lse


def flash_backward(q, k, v, out, lse, d_out, causal: bool = False, block_q: int = 128, block_k: int = 128):
    """dQ, dK, dV by recomputing each block of probabilities from L (Algorithm 4)."""
    n, n_keys = q.size(-2), k.size(-2)
    offset = n_keys - n
    tau = 1.0 / math.sqrt(q.size(-1))
    acc_t = _acc(q)
    d_q = torch.zeros_like(q, dtype=acc_t)
    d_k = torch.zeros_like(k, dtype=acc_t)
    d_v = torch.zeros_like(v, dtype=acc_t)
    delta = (d_out.to(acc_t) * out.to(acc_t)).sum(dim=-1)  # D_i = rowsum(dO_i * O_i)
    for i0 in range(0, n, block_q):
        i1 = min(i0 + block_q, n)
        q_i, do_i = q[..., i0:i1, :].to(acc_t), d_out[..., i0:i1, :].to(acc_t)
        lse_i, delta_i = lse[..., i0:i1, None], delta[..., i0:i1, None]
        for j0, j1 in _key_blocks(i0, i1, n_keys, block_k, causal, offset):
            k_j, v_j = k[..., j0:j1, :].to(acc_t), v[..., j0:j1, :].to(acc_t)
            s = tau * (q_i @ k_j.transpose(-2, -1))
            mask = _block_mask(i0, i1, j0, j1, offset, q.device) if causal else None
            if mask is not None:
                s = s.masked_fill(mask, -math.inf)
            p = torch.exp(s - lse_i)
            d_v[..., j0:j1, :] += p.transpose(-2, -1) @ do_i
            d_s = p * (do_i @ v_j.transpose(-2, -1) - delta_i)
            d_q[..., i0:i1, :] += tau * (d_s @ k_j)
            d_k[..., j0:j1, :] += tau * (d_s.transpose(-2, -1) @ q_i)
    return d_q.to(q.dtype), d_k.to(k.dtype), d_v.to(v.dtype)


class FlashAttention(torch.autograd.Function):
    """Exact attention whose autograd graph stores O(N d): Q, K, V, O and L."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool = False, block_q: int = 128, block_k: int = 128):
        out, lse = flash_forward(q, k, v, causal, block_q, block_k)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.block_q, ctx.block_k = causal, block_q, block_k
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse = ctx.saved_tensors
        d_q, d_k, d_v = flash_backward(q, k, v, out, lse, d_out.contiguous(), ctx.causal, ctx.block_q, ctx.block_k)
        return d_q, d_k, d_v, None, None, None


def flash_attention(q, k, v, mask=None, causal: bool = False, block_q: int = 128, block_k: int = 128):
    """An attention function of `reproductions/transformer/layers.py`'s signature (causal or not;
    arbitrary boolean masks are not part of the kernel)."""
    if mask is not None:
        raise ValueError("flash_attention supports causal masking only, not an arbitrary mask")
    return FlashAttention.apply(q, k, v, causal, block_q, block_k)
