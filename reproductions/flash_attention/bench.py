"""FlashAttention benchmarks: attention forward + backward at one length, our tiled kernel
against naive attention and torch's scaled_dot_product_attention (tokens/s), and its peak extra
memory against naive attention's, timed and counted in the same process (`measure.py`)."""

from __future__ import annotations

from reproductions.flash_attention import measure

CFG = measure.Config(head_dim=64, speed_heads=4, memory_heads=1, block=256, repeats=3)
N = 2048


def run() -> list[dict]:
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
