"""BitNet benchmarks against the field's code, timed in the same process on the same inputs:

- a training step (forward + backward) of our BitLinear against Hugging Face transformers'
  `AutoBitLinear` with online quantisation (its BitNet layer for training; it quantises weights to
  b1.58's ternary {-1, 0, +1} and activations to int8 per token with straight-through estimators,
  with its RMSNorm before the quantiser): the same shape, batch and optimiser;
- packing 1-bit signs: ours (torch) against `numpy.packbits` on the same matrix of +-1 floats;
- bytes of one 4096 x 4096 matrix stored: our 1-bit signs against transformers' 2-bit ternary
  packing (`pack_weights`), as tensors in memory.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from reproductions.bitnet.bitlinear import BitLinear, binarise, pack_signs

D_IN, D_OUT, TOKENS, STEPS, WARMUP = 512, 2048, 2048, 20, 3


def _step_time(layer: torch.nn.Module) -> float:
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(TOKENS, D_IN, generator=g) for _ in range(STEPS)]
    for i, x in enumerate(xs):
        if i == WARMUP:
            start = time.perf_counter()
        loss = layer(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / (STEPS - WARMUP)


def _best(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run() -> list[dict]:
    from transformers.integrations.bitnet import AutoBitLinear, pack_weights

    torch.manual_seed(0)
    ours = _step_time(BitLinear(D_IN, D_OUT))
    hf = _step_time(AutoBitLinear(D_IN, D_OUT, bias=False, online_quant=True, use_rms_norm=True))
    rows = [{"benchmark": f"quantised linear layer, training step ({TOKENS} tokens, {D_IN} -> {D_OUT})",
             "ours": 1e3 * ours, "baseline": 1e3 * hf, "unit": "ms (vs transformers AutoBitLinear, b1.58)",
             "ratio": hf / ours}]

    w = torch.randn(4096, 4096)
    signs = binarise(w)[0]
    as_numpy = signs.numpy()
    t_ours, t_np = _best(lambda: pack_signs(signs)), _best(lambda: np.packbits(as_numpy > 0))
    assert np.array_equal(pack_signs(signs).numpy(), np.packbits(as_numpy > 0))
    rows.append({"benchmark": "pack the signs of a 4096 x 4096 matrix", "ours": 1e3 * t_ours, "baseline": 1e3 * t_np,
                 "unit": "ms (vs numpy.packbits)", "ratio": t_np / t_ours})

    ternary = torch.clamp(torch.round(w / w.abs().mean()), -1, 1)
    ours_bytes = pack_signs(signs).numel()
    hf_bytes = pack_weights(ternary).numel() * pack_weights(ternary).element_size()
    rows.append({"benchmark": "stored bytes of a 4096 x 4096 matrix", "ours": ours_bytes, "baseline": hf_bytes,
                 "unit": "bytes (vs transformers' 2-bit ternary packing)", "ratio": hf_bytes / ours_bytes})
    return rows
