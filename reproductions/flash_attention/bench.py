"""FlashAttention benchmarks, forward + backward, ours against baselines timed in the same process.

- CPU rows (always): our tiled PyTorch kernel against naive attention and torch's
  scaled_dot_product_attention at one length (tokens/s), and its peak extra memory against naive
  attention's (`measure.py`).
- GPU rows (with CUDA; skipped with a message without): the Triton kernels against naive attention,
  torch's scaled_dot_product_attention (its default choice) and its FlashAttention backend, at
  N = 1k..16k (batch 1, 16 heads, head size 64, causal, bf16): time of forward + backward (CUDA
  events, median) and peak memory allocated beyond the inputs.

`python -m reproductions.flash_attention.bench [--lengths 1024,2048] [--dtype bf16|fp16|fp32]
[--full] [--heads 16] [--head-dim 64] [--batch 1]` prints the GPU table alone; with `--tune`,
the fastest of a few block sizes per kernel at the largest length (to update
`triton_kernel.CONFIGS`).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import torch
import torch.nn.functional as F

from reproductions.flash_attention import measure
from reproductions.transformer.layers import naive_attention

CFG = measure.Config(head_dim=64, speed_heads=4, memory_heads=1, block=256, repeats=3)
N = 2048
GPU_LENGTHS = [1024, 2048, 4096, 8192, 16384]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def cpu_rows() -> list[dict]:
    speed = {m: measure.tokens_per_second(m, N, CFG, seed=0) for m in measure.METHODS}
    memory = {m: measure.peak_extra_bytes(m, N, CFG, seed=0) / 2**20 for m in ("naive", "tiled")}
    return [
        {"benchmark": f"attention fwd+bwd, N={N}, d=64, 4 heads", "ours": speed["tiled"], "baseline": speed["naive"],
         "unit": "tokens/s (tiled vs naive)", "ratio": speed["tiled"] / speed["naive"]},
        {"benchmark": f"attention fwd+bwd, N={N}, d=64, 4 heads", "ours": speed["tiled"], "baseline": speed["sdpa"],
         "unit": "tokens/s (tiled vs scaled_dot_product_attention)", "ratio": speed["tiled"] / speed["sdpa"]},
        {"benchmark": f"attention peak extra memory, N={N}, 1 head", "ours": memory["tiled"], "baseline": memory["naive"],
         "unit": "MiB (tiled vs naive; ratio naive / tiled)", "ratio": memory["naive"] / memory["tiled"]},
    ]


# -- GPU -------------------------------------------------------------------------------------------
def _sdpa_flash(q, k, v, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def gpu_methods() -> dict:
    from reproductions.flash_attention.triton_kernel import triton_flash_attention

    return {
        "triton": lambda q, k, v, causal: triton_flash_attention(q, k, v, causal=causal),
        "naive": lambda q, k, v, causal: naive_attention(q, k, v, causal=causal),
        "sdpa": lambda q, k, v, causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
        "sdpa_flash": _sdpa_flash,
    }


def time_and_memory(fn, n: int, causal: bool, dtype: torch.dtype, batch: int, heads: int, head_dim: int,
                    budget_s: float = 1.0) -> tuple[float, float]:
    """Median milliseconds of forward + backward, and peak MiB allocated beyond the inputs (NaN, NaN
    when the GPU runs out of memory or the method does not support the setting)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    inputs = [torch.randn(batch, heads, n, head_dim, device="cuda", dtype=dtype, generator=g) for _ in range(4)]
    for t in inputs[:3]:
        t.requires_grad_()

    def step():
        q, k, v, grad = inputs
        fn(q, k, v, causal).backward(grad)
        for t in (q, k, v):
            t.grad = None

    try:
        step()  # compile, warm up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        first = start.elapsed_time(end)
        times = [first]
        for _ in range(max(2, min(20, int(budget_s * 1000 / max(first, 1e-3))))):
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times), peak
    except Exception as e:  # out of memory, no kernel for this setting, a block size the GPU cannot hold
        print(f"  {n}: {type(e).__name__}: {str(e).splitlines()[0][:120]}", file=sys.stderr)
        return math.nan, math.nan
    finally:
        inputs.clear()
        torch.cuda.empty_cache()


def gpu_table(lengths=GPU_LENGTHS, dtype: str = "bf16", causal: bool = True, batch: int = 1, heads: int = 16,
              head_dim: int = 64) -> list[dict]:
    """One row per length: ms and MiB of forward + backward per method."""
    rows = []
    for n in lengths:
        row = {"N": n}
        for name, fn in gpu_methods().items():
            ms, mib = time_and_memory(fn, n, causal, DTYPES[dtype], batch, heads, head_dim)
            row[f"{name}_ms"], row[f"{name}_mib"] = ms, mib
        rows.append(row)
        print("  " + ", ".join(f"{k}={v:.4g}" for k, v in row.items()), file=sys.stderr, flush=True)
    return rows


def gpu_rows(table: list[dict], setting: str) -> list[dict]:
    """The benchmark rows: ours against each baseline, time (ratio > 1: ours faster) and memory."""
    out = []
    for row in table:
        n = row["N"]
        for base in ("naive", "sdpa", "sdpa_flash"):
            out.append({"benchmark": f"GPU attention fwd+bwd, N={n}, {setting}", "ours": row["triton_ms"],
                        "baseline": row[f"{base}_ms"], "unit": f"ms (triton vs {base})",
                        "ratio": row[f"{base}_ms"] / row["triton_ms"]})
        out.append({"benchmark": f"GPU attention peak memory, N={n}, {setting}", "ours": row["triton_mib"],
                    "baseline": row["naive_mib"], "unit": "MiB beyond inputs (triton vs naive)",
                    "ratio": row["naive_mib"] / row["triton_mib"]})
    return out


def run() -> list[dict]:
    rows = cpu_rows()
    if not torch.cuda.is_available():
        print("[flash_attention] GPU rows skipped: no CUDA device (the Triton kernels' timings need a GPU)",
              file=sys.stderr)
        return rows
    setting = "b1 h16 d64 causal bf16"
    return rows + gpu_rows(gpu_table(), setting)


TUNE = {  # candidate launch settings per kernel (BLOCK_M, BLOCK_N, num_warps, num_stages)
    "fwd": [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 32, 4, 4), (64, 128, 4, 3),
            (128, 64, 4, 4), (128, 128, 4, 2)],
    "dkdv": [(32, 128, 4, 3), (32, 128, 8, 3), (64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 4, 3), (16, 128, 4, 4),
             (32, 128, 4, 4)],
    "dq": [(128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3), (128, 32, 8, 4), (128, 16, 4, 4)],
}


def tune(n: int, dtype: str, causal: bool, batch: int, heads: int, head_dim: int) -> dict:
    """The fastest candidate of each kernel at one length (forward alone for the forward kernel,
    forward + backward for the backward kernels, the others at their defaults)."""
    from reproductions.flash_attention.triton_kernel import triton_flash_attention

    best = {}
    for kind, candidates in TUNE.items():
        times = {}
        for bm, bn, warps, stages in candidates:
            blocks = {kind: dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)}
            if kind == "fwd":
                fn = lambda q, k, v, causal, b=blocks: triton_flash_attention(q.detach(), k.detach(), v.detach(),
                                                                             causal=causal, blocks=b).requires_grad_()
            else:
                fn = lambda q, k, v, causal, b=blocks: triton_flash_attention(q, k, v, causal=causal, blocks=b)
            ms, _ = time_and_memory(fn, n, causal, DTYPES[dtype], batch, heads, head_dim, budget_s=0.3)
            times[(bm, bn, warps, stages)] = ms
            print(f"  {kind} BLOCK_M={bm} BLOCK_N={bn} num_warps={warps} num_stages={stages}: {ms:.3f} ms",
                  file=sys.stderr, flush=True)
        ok = {c: t for c, t in times.items() if not math.isnan(t)}
        best[kind] = min(ok, key=ok.get) if ok else None
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", default=",".join(map(str, GPU_LENGTHS)))
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--full", action="store_true", help="not causal")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--tune", action="store_true", help="time candidate block sizes per kernel at the largest length")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench: the GPU table needs a CUDA device")
    if a.tune:
        n = max(int(x) for x in a.lengths.split(","))
        for kind, cfg in tune(n, a.dtype, not a.full, a.batch, a.heads, a.head_dim).items():
            print(f"fastest {kind} at N={n}: (BLOCK_M, BLOCK_N, num_warps, num_stages) = {cfg}")
        return
    table = gpu_table([int(x) for x in a.lengths.split(",")], a.dtype, not a.full, a.batch, a.heads, a.head_dim)
    methods = list(gpu_methods())
    print(f"forward + backward, batch {a.batch}, {a.heads} heads, d {a.head_dim}, "
          f"{'full' if a.full else 'causal'}, {a.dtype}, {torch.cuda.get_device_name()}")
    print("| N | " + " | ".join(f"{m} ms" for m in methods) + " | triton / naive speed-up | triton / sdpa_flash time | "
          + " | ".join(f"{m} MiB" for m in methods) + " |")
    print("|---" * (2 * len(methods) + 3) + "|")
    for r in table:
        print(f"| {r['N']} | " + " | ".join(f"{r[f'{m}_ms']:.3g}" for m in methods)
              + f" | {r['naive_ms'] / r['triton_ms']:.2f}x | {r['triton_ms'] / r['sdpa_flash_ms']:.2f}x | "
              + " | ".join(f"{r[f'{m}_mib']:.0f}" for m in methods) + " |")


if __name__ == "__main__":
    main()
