"""FlashAttention's Triton kernels (forward, and the backward's dQ, dK, dV recomputed from the saved
log-sum-exp) against a float64 reference of eq. (1) and against torch's autograd of naive
attention in the same precision, at small, awkward shapes (lengths not a multiple of the block,
one token, more keys than queries, strided inputs), causal and not, fp32 (IEEE products: equal
to 1e-5) and fp16 / bf16 (no worse than twice naive attention's own error in that precision, the
test of the FlashAttention repository).

On the CPU the kernels run in Triton's interpreter (`TRITON_INTERPRET=1`), in one subprocess that
runs every case (`python -m tests.test_flash_attention_triton` prints them as JSON); on a GPU the
same cases, plus larger ones, run compiled (the tests marked as needing CUDA).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(fwd=dict(BLOCK_M=16, BLOCK_N=16), dkdv=dict(BLOCK_M=16, BLOCK_N=16), dq=dict(BLOCK_M=16, BLOCK_N=16))
MIXED = dict(fwd=dict(BLOCK_M=32, BLOCK_N=16), dkdv=dict(BLOCK_M=16, BLOCK_N=32), dq=dict(BLOCK_M=32, BLOCK_N=16))
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# (name, dtype, (batch, heads, n_queries, n_keys, head size), causal, blocks: None = the default launch)
CASES = [
    *[(f"fp32-{tag}-{'causal' if c else 'full'}", "fp32", shape, c, blocks)
      for tag, shape, blocks in (("n1", (1, 1, 1, 1, 16), SMALL), ("n17", (1, 2, 17, 17, 16), SMALL),
                                 ("n64", (2, 1, 64, 64, 64), MIXED), ("n129", (1, 1, 129, 129, 64), SMALL),
                                 ("q50k83", (1, 2, 50, 83, 32), MIXED), ("n129-default", (1, 1, 129, 129, 16), None))
      for c in (False, True)],
    ("fp32-q17k5-full", "fp32", (1, 1, 17, 5, 16), False, SMALL),  # more queries than keys
    *[(f"{dt}-{tag}-{'causal' if c else 'full'}", dt, shape, c, blocks)
      for dt in ("fp16", "bf16")
      for tag, shape, blocks in (("n17", (1, 2, 17, 17, 16), SMALL), ("n129", (1, 1, 129, 129, 64), MIXED),
                                 ("q40k70", (1, 1, 40, 70, 32), SMALL))
      for c in (False, True)],
]
FP32_TOL = 1e-5


def _reference(q, k, v, grad, causal):
    """Eq. (1) and its gradients in float64, through torch's autograd."""
    from reproductions.transformer.layers import naive_attention

    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = naive_attention(q, k, v, causal=causal)
    return [out, *torch.autograd.grad(out, (q, k, v), grad.double())]


def _naive(q, k, v, grad, causal):
    """Naive attention in the inputs' own precision, through torch's autograd."""
    from reproductions.transformer.layers import naive_attention

    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = naive_attention(q, k, v, causal=causal)
    return [out, *torch.autograd.grad(out, (q, k, v), grad)]


def run_case(dtype: str, shape, causal: bool, blocks, device: str, seed: int = 0) -> dict:
    """Largest errors of output, dQ, dK, dV (ours and naive attention's, each against float64),
    and of the log-sum-exp, for one case. Inputs are strided like the GPT's heads: views of a
    (batch, time, heads, d) tensor."""
    from reproductions.flash_attention.triton_kernel import triton_flash_attention, triton_forward

    b, h, n, m, d = shape
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, t, h, d, generator=g).to(device, DTYPES[dtype]).transpose(1, 2) for t in (n, m, m))
    grad = torch.randn(b, h, n, d, generator=g).to(device, DTYPES[dtype])
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = triton_flash_attention(*leaves, causal=causal, blocks=blocks)
    ours = [out, *torch.autograd.grad(out, leaves, grad)]
    ref = _reference(q, k, v, grad, causal)
    naive = _naive(q, k, v, grad, causal)
    err = lambda xs: [(x.double() - r).abs().max().item() for x, r in zip(xs, ref)]
    _, lse = triton_forward(q, k, v, causal=causal, blocks=None if blocks is None else blocks["fwd"])
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(d)
    if causal:
        scores = scores.masked_fill(torch.ones(n, m, dtype=torch.bool, device=device).tril(m - n).logical_not(),
                                    -math.inf)
    lse_err = (lse.double() - torch.logsumexp(scores, -1)).abs().max().item()
    finite = all(bool(torch.isfinite(x).all()) for x in ours)
    # the precision's own rounding at each result's scale (the FlashAttention repository's atol)
    rounding = [((r.to(x.dtype) + 0.3 - 0.3) - r.to(x.dtype)).abs().max().item() for x, r in zip(ours, ref)]
    return {"ours": err(ours), "naive": err(naive), "rounding": rounding, "lse": lse_err, "finite": finite,
            "dtypes": [str(x.dtype) for x in ours]}


def run_cases(device: str, cases=CASES) -> dict[str, dict]:
    return {name: run_case(dt, shape, causal, blocks, device) for name, dt, shape, causal, blocks in cases}


@lru_cache(maxsize=1)
def _interpreted() -> dict[str, dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-m", "tests.test_flash_attention_triton"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def check(name: str, result: dict, strict: bool = True) -> None:
    """fp32 within FP32_TOL of float64 (`strict`, the small cases), else no worse than twice naive
    attention's error in the same precision plus twice the precision's rounding at that scale."""
    dtype = name.split("-")[0]
    assert result["finite"], f"{name}: non-finite values"
    assert result["dtypes"] == [str(DTYPES[dtype])] * 4, f"{name}: outputs and gradients keep the input dtype"
    labels = ("output", "dQ", "dK", "dV")
    if dtype == "fp32" and strict:
        for label, e in zip(labels, result["ours"]):
            assert e < FP32_TOL, f"{name}: {label} differs from float64 by {e:.2e}"
        assert result["lse"] < FP32_TOL, f"{name}: log-sum-exp differs by {result['lse']:.2e}"
    else:  # no worse than naive attention in the same precision (FlashAttention's repository test)
        for label, e, e_naive, r in zip(labels, result["ours"], result["naive"], result["rounding"]):
            assert e <= 2 * e_naive + 2 * r, (f"{name}: {label} error {e:.2e} against naive attention's "
                                              f"{e_naive:.2e} (rounding {r:.1e})")
        assert result["lse"] < 1e-2, f"{name}: log-sum-exp differs by {result['lse']:.2e}"


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_triton_kernels_in_the_interpreter(name):
    check(name, _interpreted()[name])


def test_a_wrong_kernel_fails_the_check():
    """The check is not vacuous: a gradient off by a small relative error fails it."""
    good = {"ours": [1e-7] * 4, "naive": [1e-3] * 4, "rounding": [1e-3] * 4, "lse": 1e-7, "finite": True, "dtypes": ["torch.float32"] * 4}
    check("fp32-x", good)
    for bad in ({**good, "ours": [1e-7, 1e-7, 3e-5, 1e-7]}, {**good, "finite": False},
                {**good, "dtypes": ["torch.float64"] * 4}):
        with pytest.raises(AssertionError):
            check("fp32-x", bad)
    with pytest.raises(AssertionError):
        check("fp16-x", {**good, "ours": [1e-7, 6e-3, 1e-7, 1e-7], "dtypes": ["torch.float16"] * 4})


def test_interpreted_gpt_with_triton_attention_equals_sdpa():
    """Inside the GPT (strided heads, causal, and queries fewer than keys with the KV cache)."""
    code = """
import torch
from reproductions.flash_attention.triton_kernel import triton_flash_attention
from reproductions.transformer.gpt import GPT, GPTConfig
cfg = GPTConfig(vocab_size=30, block_size=40, n_layer=2, n_head=2, n_embd=32)
torch.manual_seed(0)
ref = GPT(cfg).eval()
ours = GPT(cfg, attend=triton_flash_attention).eval()
ours.load_state_dict(ref.state_dict())
idx = torch.randint(30, (2, 40))
torch.testing.assert_close(ours(idx)[0], ref(idx)[0], atol=1e-5, rtol=1e-5)
assert torch.equal(ours.generate(idx[:, :6], 8), ref.generate(idx[:, :6], 8))
print("gpt ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "TRITON_INTERPRET": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "gpt ok" in out.stdout, out.stderr[-3000:]


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
                    reason="the error is for CPU tensors without the interpreter")
def test_cpu_tensors_without_the_interpreter_are_refused_clearly():
    from reproductions.flash_attention.triton_kernel import triton_flash_attention

    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="need CUDA tensors"):
        triton_flash_attention(q, q, q)


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: compiled Triton kernels")

# Compiled, the kernels run with their default launch settings (one compilation per dtype, causal
# flag and head size: 12 here), at small and at multi-block lengths that are not a multiple of a block.
COMPILED = [(f"{dt}-{tag}-{'causal' if c else 'full'}", dt, shape, c, None)
            for dt in ("fp32", "fp16", "bf16")
            for tag, shape in (("n1", (1, 1, 1, 1, 64)), ("n17", (1, 2, 17, 17, 64)), ("n1000", (2, 4, 1000, 1000, 64)),
                               ("q257k300", (1, 3, 257, 300, 128)), ("n4096", (1, 2, 4096, 4096, 64)))
            for c in (False, True)]
COMPILED += [(f"{dt}-q17k5-full", dt, (1, 1, 17, 5, 64), False, None) for dt in ("fp32", "bf16")]


@needs_gpu
@pytest.mark.parametrize("name", [c[0] for c in COMPILED])
def test_compiled_triton_kernels_on_the_gpu(name):
    case = next(c for c in COMPILED if c[0] == name)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("TRITON_INTERPRET is set: these are the compiled kernels' tests")
    check(name, run_case(*case[1:], device="cuda"), strict=case[2][2] < 1000)


@needs_gpu
def test_compiled_memory_grows_linearly():
    """Peak CUDA memory of forward + backward beyond the inputs: linear in N for the kernel."""
    from reproductions.flash_attention.triton_kernel import triton_flash_attention

    extra = []
    for n in (2048, 8192):
        q, k, v = (torch.randn(1, 4, n, 64, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(3))
        grad = torch.randn_like(q)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        triton_flash_attention(q, k, v, causal=True).backward(grad)
        torch.cuda.synchronize()
        extra.append(torch.cuda.max_memory_allocated() - base)
    assert extra[1] / extra[0] < 5, f"peak extra memory grew {extra[1] / extra[0]:.1f}x for 4x the length"


if __name__ == "__main__":  # the interpreter's run of every case, as one line of JSON
    torch.manual_seed(0)
    print(json.dumps(run_cases("cpu")))
