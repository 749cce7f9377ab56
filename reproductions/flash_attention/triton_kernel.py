"""FlashAttention as Triton kernels for GPUs: the forward pass (Algorithm 1) and the backward pass
(Algorithm 2 / 4: dQ, dK, dV recomputed block by block from Q, K, V and the saved log-sum-exp),
the same algorithm as the PyTorch reference `flash.py`, in the loop order of FlashAttention-2.

- Forward: one program per block of queries of one (batch, head), looping over key/value blocks
  with the online softmax; it writes O and L = m + log(l) (kept in base 2, `exp2` being the GPU's
  native exponential) and nothing of size N x N.
- Backward: a preprocessing kernel computes D_i = rowsum(dO_i * O_i); one kernel per key block
  accumulates dK_j, dV_j over the query blocks (P_ij recomputed as exp(S_ij - L_i)); one kernel
  per query block accumulates dQ_i over the key blocks. No atomics: the result is deterministic.
- Inputs fp16 or bf16 (the paper's setting: tensor-core products, fp32 accumulation and softmax
  statistics) or fp32, whose products are IEEE fp32 by default (`precision="ieee"`, exact to fp32
  rounding: what the exactness tests check) or TF32 (`precision="tf32"`).
- Causal or not, queries aligned to the end of the keys (as with a KV cache), any sequence lengths
  (the last block is masked), head sizes 16, 32, 64, 128 or 256; any strides.
- Blocks that need no mask (inside the sequence and wholly visible) skip the masking arithmetic.

Without a GPU the kernels run in Triton's interpreter (`TRITON_INTERPRET=1`, set before `triton` is
imported), which is how the tests check them on the CPU.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

LOG2E = math.log2(math.e)
HEAD_SIZES = (16, 32, 64, 128, 256)


# -- products ----------------------------------------------------------------------------------------
@triton.jit
def _dot(a, b, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b in fp32: IEEE fp32 products, or tensor-core products of fp16 / bf16 (TF32 for fp32)."""
    if UPCAST:  # Triton's interpreter multiplies bf16 wrongly (as raw bits); the values are bf16 all the same
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    elif IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _dot_acc(a, b, acc, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b, accumulated in fp32."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _query_block(CAUSAL: tl.constexpr):
    """This program's block of queries; causal, the last (longest) blocks first, so the GPU's last
    wave holds the short ones."""
    if CAUSAL:
        return tl.num_programs(0) - 1 - tl.program_id(0)
    else:
        return tl.program_id(0)


# -- forward -----------------------------------------------------------------------------------------
@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, start, end, offs_m, offs_n0, n_k, offset,
               qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + offs_n0
        if MASKED:
            k = tl.load(k_ptrs + start_n * stride_kn, mask=(offs_n < n_k)[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs + start_n * stride_kn)
        s = _dot(q, tl.trans(k), IEEE, UPCAST) * qk_scale  # base-2 logits: tau * log2(e) * q.k
        if MASKED:
            valid = offs_n[None, :] < n_k
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= offs_m[:, None] + offset)
            s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(v_ptrs + start_n * stride_vn, mask=(offs_n < n_k)[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs + start_n * stride_vn)
        acc = _dot_acc(p.to(v.dtype), v, acc * alpha[:, None], IEEE, UPCAST)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, O, L, n_heads, n_q, n_k, offset, qk_scale,
                sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod,
                CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr,
                IEEE: tl.constexpr, UPCAST: tl.constexpr):
    start_m = _query_block(CAUSAL) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // n_heads).to(tl.int64)
    h = (bh % n_heads).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    row_ok = offs_m < n_q
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd, mask=row_ok[:, None], other=0.0)
    k_ptrs = K + b * skb + h * skh + offs_n0[:, None] * skn + offs_d[None, :] * skd
    v_ptrs = V + b * svb + h * svh + offs_n0[:, None] * svn + offs_d[None, :] * svd
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    if CAUSAL:  # keys every row of the block sees, then the diagonal blocks
        full = (tl.minimum(start_m + offset + 1, n_k) // BLOCK_N) * BLOCK_N
        hi = tl.minimum(start_m + BLOCK_M + offset, n_k)
    else:  # whole key blocks, then the last, partial one
        full = (n_k // BLOCK_N) * BLOCK_N
        hi = n_k
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, skn, svn, 0, full, offs_m, offs_n0, n_k, offset,
                               qk_scale, False, CAUSAL, BLOCK_N, IEEE, UPCAST)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptrs, v_ptrs, skn, svn, full, hi, offs_m, offs_n0, n_k, offset,
                               qk_scale, True, CAUSAL, BLOCK_N, IEEE, UPCAST)
    acc = acc / l_i[:, None]
    tl.store(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod, acc.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(L + bh.to(tl.int64) * n_q + offs_m, m_i + tl.math.log2(l_i), mask=row_ok)  # base 2


# -- backward ----------------------------------------------------------------------------------------
@triton.jit
def _bwd_preprocess(O, DO, Delta, n_heads, n_q, sob, soh, som, sod, sdb, sdh, sdm, sdd,
                    BLOCK_M: tl.constexpr, D: tl.constexpr):
    """D_i = rowsum(dO_i * O_i), in fp32."""
    bh = tl.program_id(1)
    b = (bh // n_heads).to(tl.int64)
    h = (bh % n_heads).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    row_ok = offs_m < n_q
    o = tl.load(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod, mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdm + offs_d[None, :] * sdd, mask=row_ok[:, None],
                 other=0.0)
    tl.store(Delta + bh.to(tl.int64) * n_q + offs_m, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=row_ok)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, l_ptr, delta_ptr, stride_qm, stride_dom, start, end, offs_n, offs_m0,
                n_q, offset, qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
                IEEE: tl.constexpr, UPCAST: tl.constexpr):
    for start_m in range(start, end, BLOCK_M):
        offs_m = start_m + offs_m0
        if MASKED:
            row_ok = offs_m < n_q
            q = tl.load(q_ptrs + start_m * stride_qm, mask=row_ok[:, None], other=0.0)
            do = tl.load(do_ptrs + start_m * stride_dom, mask=row_ok[:, None], other=0.0)
            lse = tl.load(l_ptr + offs_m, mask=row_ok, other=0.0)
            delta = tl.load(delta_ptr + offs_m, mask=row_ok, other=0.0)
        else:
            q = tl.load(q_ptrs + start_m * stride_qm)
            do = tl.load(do_ptrs + start_m * stride_dom)
            lse = tl.load(l_ptr + offs_m)
            delta = tl.load(delta_ptr + offs_m)
        s_t = _dot(k, tl.trans(q), IEEE, UPCAST)
        p_t = tl.math.exp2(s_t * qk_scale - lse[None, :])  # P^T, recomputed from L
        if MASKED:
            valid = row_ok[None, :]
            if CAUSAL:
                valid = valid & (offs_m[None, :] + offset >= offs_n[:, None])
            p_t = tl.where(valid, p_t, 0.0)
        dv = _dot_acc(p_t.to(do.dtype), do, dv, IEEE, UPCAST)
        ds_t = p_t * (_dot(v, tl.trans(do), IEEE, UPCAST) - delta[None, :])  # dS^T = P^T * (dP^T - D)
        dk = _dot_acc(ds_t.to(q.dtype), q, dk, IEEE, UPCAST)
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, L, Delta, DK, DV, n_heads, n_q, n_k, offset, qk_scale, sm_scale,
                     sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sdb, sdh, sdm, sdd,
                     sdkb, sdkh, sdkn, sdkd, sdvb, sdvh, sdvn, sdvd,
                     CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr,
                     IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """dK_j and dV_j of one block of keys, over the query blocks that see it."""
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b = (bh // n_heads).to(tl.int64)
    h = (bh % n_heads).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    key_ok = offs_n < n_k
    k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :] * skd, mask=key_ok[:, None], other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :] * svd, mask=key_ok[:, None], other=0.0)
    q_ptrs = Q + b * sqb + h * sqh + offs_m0[:, None] * sqm + offs_d[None, :] * sqd
    do_ptrs = DO + b * sdb + h * sdh + offs_m0[:, None] * sdm + offs_d[None, :] * sdd
    l_ptr = L + bh.to(tl.int64) * n_q
    delta_ptr = Delta + bh.to(tl.int64) * n_q
    dk = tl.zeros([BLOCK_N, D], tl.float32)
    dv = tl.zeros([BLOCK_N, D], tl.float32)
    q_end = (n_q // BLOCK_M) * BLOCK_M          # whole query blocks end here
    q_hi = tl.cdiv(n_q, BLOCK_M) * BLOCK_M
    if CAUSAL:  # query i sees key j when i + offset >= j
        lo = (tl.maximum(start_n - offset, 0) // BLOCK_M) * BLOCK_M                          # first row seeing a key
        full = tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - offset, 0), BLOCK_M) * BLOCK_M    # rows seeing every key
        full = tl.maximum(full, lo)
    else:
        lo = 0
        full = 0
    unmasked_end = tl.maximum(q_end, full)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, l_ptr, delta_ptr, sqm, sdm, lo, tl.minimum(full, q_hi),
                         offs_n, offs_m0, n_q, offset, qk_scale, True, CAUSAL, BLOCK_M, IEEE, UPCAST)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, l_ptr, delta_ptr, sqm, sdm, full, q_end,
                         offs_n, offs_m0, n_q, offset, qk_scale, False, CAUSAL, BLOCK_M, IEEE, UPCAST)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, l_ptr, delta_ptr, sqm, sdm, unmasked_end, q_hi,
                         offs_n, offs_m0, n_q, offset, qk_scale, True, CAUSAL, BLOCK_M, IEEE, UPCAST)
    dk *= sm_scale
    tl.store(DK + b * sdkb + h * sdkh + offs_n[:, None] * sdkn + offs_d[None, :] * sdkd, dk.to(DK.dtype.element_ty),
             mask=key_ok[:, None])
    tl.store(DV + b * sdvb + h * sdvh + offs_n[:, None] * sdvn + offs_d[None, :] * sdvd, dv.to(DV.dtype.element_ty),
             mask=key_ok[:, None])


@triton.jit
def _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, start, end, offs_m, offs_n0, n_k, offset,
              qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + offs_n0
        if MASKED:
            key_ok = offs_n < n_k
            k = tl.load(k_ptrs + start_n * stride_kn, mask=key_ok[:, None], other=0.0)
            v = tl.load(v_ptrs + start_n * stride_vn, mask=key_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs + start_n * stride_kn)
            v = tl.load(v_ptrs + start_n * stride_vn)
        p = tl.math.exp2(_dot(q, tl.trans(k), IEEE, UPCAST) * qk_scale - lse[:, None])
        if MASKED:
            valid = key_ok[None, :]
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= offs_m[:, None] + offset)
            p = tl.where(valid, p, 0.0)
        ds = p * (_dot(do, tl.trans(v), IEEE, UPCAST) - delta[:, None])
        dq = _dot_acc(ds.to(k.dtype), k, dq, IEEE, UPCAST)
    return dq


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, L, Delta, DQ, n_heads, n_q, n_k, offset, qk_scale, sm_scale,
                   sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sdb, sdh, sdm, sdd,
                   sdqb, sdqh, sdqm, sdqd,
                   CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr,
                   IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """dQ_i of one block of queries, over the key blocks it sees."""
    start_m = _query_block(CAUSAL) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // n_heads).to(tl.int64)
    h = (bh % n_heads).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    row_ok = offs_m < n_q
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd, mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdm + offs_d[None, :] * sdd, mask=row_ok[:, None],
                 other=0.0)
    lse = tl.load(L + bh.to(tl.int64) * n_q + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(Delta + bh.to(tl.int64) * n_q + offs_m, mask=row_ok, other=0.0)
    k_ptrs = K + b * skb + h * skh + offs_n0[:, None] * skn + offs_d[None, :] * skd
    v_ptrs = V + b * svb + h * svh + offs_n0[:, None] * svn + offs_d[None, :] * svd
    dq = tl.zeros([BLOCK_M, D], tl.float32)
    if CAUSAL:
        full = (tl.minimum(start_m + offset + 1, n_k) // BLOCK_N) * BLOCK_N
        hi = tl.minimum(start_m + BLOCK_M + offset, n_k)
    else:
        full = (n_k // BLOCK_N) * BLOCK_N
        hi = n_k
    dq = _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, skn, svn, 0, full, offs_m, offs_n0, n_k, offset, qk_scale,
                   False, CAUSAL, BLOCK_N, IEEE, UPCAST)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, skn, svn, full, hi, offs_m, offs_n0, n_k, offset, qk_scale,
                   True, CAUSAL, BLOCK_N, IEEE, UPCAST)
    dq *= sm_scale
    tl.store(DQ + b * sdqb + h * sdqh + offs_m[:, None] * sdqm + offs_d[None, :] * sdqd, dq.to(DQ.dtype.element_ty),
             mask=row_ok[:, None])


# -- launch ------------------------------------------------------------------------------------------
def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Block sizes and launch settings, by (kind, input bytes per element): a list tried in order, the
# first that compiles within the GPU's shared memory is kept (per kind, dtype, head size).
# FlashAttention-2 / Triton tutorial choices for d <= 128 on A100/H100-class GPUs.
CONFIGS = {
    ("fwd", 2): [dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3), dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2),
                 dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=1)],
    ("fwd", 4): [dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2), dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)],
    ("dkdv", 2): [dict(BLOCK_M=32, BLOCK_N=128, num_warps=4, num_stages=3), dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=2),
                  dict(BLOCK_M=16, BLOCK_N=32, num_warps=4, num_stages=1)],
    ("dkdv", 4): [dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=2), dict(BLOCK_M=16, BLOCK_N=32, num_warps=4, num_stages=1)],
    ("dq", 2): [dict(BLOCK_M=128, BLOCK_N=32, num_warps=4, num_stages=3), dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2),
                dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=1)],
    ("dq", 4): [dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2), dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=1)],
}
_CHOSEN: dict[tuple, tuple[dict, dict]] = {}  # the settings that fit, per kernel, dtype, head size


def _launch(kind: str, kernel, grid_of, args: tuple, consts: dict, dtype: torch.dtype, blocks: dict | None):
    """Run `kernel` with the given blocks, or the first of CONFIGS[kind] the GPU has resources for."""
    key = (kind, dtype, consts["D"], consts["CAUSAL"], consts["IEEE"])
    if blocks is None and key in _CHOSEN:  # the common case: settings known to fit
        tile, launch = _CHOSEN[key]
        kernel[grid_of(tile)](*args, **consts, **tile, **launch)
        return
    if blocks is not None:
        candidates = [dict(blocks)]
    elif interpreted():
        candidates = CONFIGS[(kind, 4)][:1]  # smaller blocks: the interpreter is slow
    else:
        candidates = CONFIGS[(kind, 4 if dtype == torch.float32 else 2)]
    for i, cfg in enumerate(candidates):
        tile = {k: cfg[k] for k in ("BLOCK_M", "BLOCK_N")}
        launch = {k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg}
        try:
            kernel[grid_of(tile)](*args, **consts, **tile, **launch)
        except triton.runtime.errors.OutOfResources:
            if i + 1 == len(candidates):
                raise
            continue
        if blocks is None:
            _CHOSEN[key] = (tile, launch)
        return


def _check(q, k, v, causal: bool, precision: str) -> None:
    if not interpreted() and not (q.is_cuda and k.is_cuda and v.is_cuda):
        raise ValueError(f"the Triton kernels need CUDA tensors (got {q.device}), or Triton's interpreter on the CPU "
                         "(TRITON_INTERPRET=1 before triton is imported); flash.py's flash_attention is the same "
                         "algorithm in PyTorch for any device")
    if not (q.dim() == k.dim() == v.dim() >= 2) or q.shape[:-2] != k.shape[:-2] or k.shape != v.shape:
        raise ValueError(f"q, k, v must be (..., n, d) with the same leading sizes, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.size(-1) != k.size(-1) or q.size(-1) not in HEAD_SIZES:
        raise ValueError(f"the Triton kernel needs a head size in {HEAD_SIZES}, got {q.size(-1)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must share one of float16, bfloat16, float32, got {q.dtype}, {k.dtype}, {v.dtype}")
    if causal and k.size(-2) < q.size(-2):
        raise ValueError(f"causal attention needs at least as many keys ({k.size(-2)}) as queries ({q.size(-2)})")
    if precision not in ("ieee", "tf32"):
        raise ValueError(f"precision {precision!r}: expected 'ieee' or 'tf32' (for float32 inputs)")


def _4d(t: torch.Tensor) -> torch.Tensor:
    """(batch, heads, n, d) views: 4-d tensors as they are, others with their leading sizes as heads."""
    if t.dim() == 4:
        return t
    return t.reshape(1, -1, t.size(-2), t.size(-1))


def _strides(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.stride())


def _ieee(dtype: torch.dtype, precision: str) -> bool:
    return dtype == torch.float32 and precision == "ieee"


def _upcast(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and interpreted()


def _forward(q, k, v, causal: bool, precision: str, blocks: dict | None):
    """O (input dtype) and L in base 2 (fp32, (batch * heads, n_q)) for 4-d q, k, v."""
    bsz, heads, n_q, d = q.shape
    n_k = k.size(-2)
    out = torch.empty(bsz, n_q, heads, d, dtype=q.dtype, device=q.device).transpose(1, 2)  # (b, t, h, d) memory
    lse2 = torch.empty(bsz * heads, n_q, dtype=torch.float32, device=q.device)
    tau = 1.0 / math.sqrt(d)
    _launch("fwd", _fwd_kernel, lambda t: (triton.cdiv(n_q, t["BLOCK_M"]), bsz * heads),
            (q, k, v, out, lse2, heads, n_q, n_k, n_k - n_q, tau * LOG2E,
             *_strides(q), *_strides(k), *_strides(v), *_strides(out)),
            dict(CAUSAL=causal, D=d, IEEE=_ieee(q.dtype, precision), UPCAST=_upcast(q.dtype)), q.dtype, blocks)
    return out, lse2


def _backward(q, k, v, out, lse2, d_out, causal: bool, precision: str, blocks: dict | None):
    bsz, heads, n_q, d = q.shape
    n_k = k.size(-2)
    tau = 1.0 / math.sqrt(d)
    ieee = _ieee(q.dtype, precision)
    delta = torch.empty_like(lse2)
    pre_block = 64 if not interpreted() else 32
    _bwd_preprocess[(triton.cdiv(n_q, pre_block), bsz * heads)](
        out, d_out, delta, heads, n_q, *_strides(out), *_strides(d_out), BLOCK_M=pre_block, D=d)
    d_q = torch.empty(bsz, n_q, heads, d, dtype=q.dtype, device=q.device).transpose(1, 2)
    d_k = torch.empty(bsz, n_k, heads, d, dtype=k.dtype, device=k.device).transpose(1, 2)
    d_v = torch.empty(bsz, n_k, heads, d, dtype=v.dtype, device=v.device).transpose(1, 2)
    common = (heads, n_q, n_k, n_k - n_q, tau * LOG2E, tau,
              *_strides(q), *_strides(k), *_strides(v), *_strides(d_out))
    consts = dict(CAUSAL=causal, D=d, IEEE=ieee, UPCAST=_upcast(q.dtype))
    _launch("dkdv", _bwd_dkdv_kernel, lambda t: (triton.cdiv(n_k, t["BLOCK_N"]), bsz * heads),
            (q, k, v, d_out, lse2, delta, d_k, d_v, *common, *_strides(d_k), *_strides(d_v)),
            consts, q.dtype, None if blocks is None else blocks.get("dkdv"))
    _launch("dq", _bwd_dq_kernel, lambda t: (triton.cdiv(n_q, t["BLOCK_M"]), bsz * heads),
            (q, k, v, d_out, lse2, delta, d_q, *common, *_strides(d_q)),
            consts, q.dtype, None if blocks is None else blocks.get("dq"))
    return d_q, d_k, d_v


def triton_forward(q, k, v, causal: bool = False, precision: str = "ieee", blocks: dict | None = None):
    """O and the natural-log log-sum-exp L of softmax(Q K^T / sqrt(d)) V for q, k, v of shape (..., n, d)."""
    _check(q, k, v, causal, precision)
    out, lse2 = _forward(_4d(q), _4d(k), _4d(v), causal, precision, blocks)
    return out.reshape(q.shape), (lse2 / LOG2E).reshape(q.shape[:-1])


class TritonFlashAttention(torch.autograd.Function):
    """Exact attention whose autograd graph stores Q, K, V, O and L only (O(N d))."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool = False, precision: str = "ieee", blocks: dict | None = None):
        _check(q, k, v, causal, precision)
        q4, k4, v4 = _4d(q), _4d(k), _4d(v)
        out, lse2 = _forward(q4, k4, v4, causal, precision, None if blocks is None else blocks.get("fwd"))
        ctx.save_for_backward(q4, k4, v4, out, lse2)
        ctx.causal, ctx.precision, ctx.blocks, ctx.shapes = causal, precision, blocks, (q.shape, k.shape, v.shape)
        return out if q.dim() == 4 else out.reshape(q.shape)

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse2 = ctx.saved_tensors
        d_out = _4d(d_out)
        if d_out.stride(-1) != 1:
            d_out = d_out.contiguous()
        d_q, d_k, d_v = _backward(q, k, v, out, lse2, d_out, ctx.causal, ctx.precision, ctx.blocks)
        q_shape, k_shape, v_shape = ctx.shapes
        return d_q.reshape(q_shape), d_k.reshape(k_shape), d_v.reshape(v_shape), None, None, None


def triton_flash_attention(q, k, v, mask=None, causal: bool = False, precision: str = "ieee",
                           blocks: dict | None = None):
    """An attention function of `reproductions/transformer/layers.py`'s signature (causal or not;
    arbitrary boolean masks are not part of the kernel). `precision` applies to float32 inputs
    ('ieee' or 'tf32'); `blocks` ({'fwd': {...}, 'dkdv': {...}, 'dq': {...}}, each with BLOCK_M,
    BLOCK_N and optionally num_warps, num_stages) overrides the block sizes."""
    if mask is not None:
        raise ValueError("triton_flash_attention supports causal masking only, not an arbitrary mask")
    return TritonFlashAttention.apply(q, k, v, causal, precision, blocks)
