"""Mamba benchmarks: our Mamba block against transformers' `MambaMixer` on the same weights and
inputs, timed in the same process (its pure-PyTorch path: the CUDA kernels of `mamba_ssm` are not
installed, and a CPU cannot run them): forward + backward at the mini tier's size (tokens/s), and
the peak extra memory of the forward + backward pass (a dispatch-mode ledger of tensor storages,
`reproductions/flash_attention/measure.py`), where the hand-written backward's recomputation
shows: transformers' loop keeps every (b, d, N) state for autograd."""

from __future__ import annotations

import time

import numpy as np
import torch

from reproductions.flash_attention.measure import PeakMemory
from reproductions.mamba.model import MambaConfig, MambaMixer

B, L, D_MODEL = 8, 128, 64


def _pair():
    from transformers import MambaConfig as HFConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer as HFMixer

    torch.manual_seed(0)
    cfg = MambaConfig(d_model=D_MODEL, d_state=16)
    ours = MambaMixer(cfg)
    hf = HFMixer(HFConfig(hidden_size=D_MODEL, state_size=16, expand=2, conv_kernel=4, time_step_rank=cfg.rank,
                          use_bias=False, use_conv_bias=True, num_hidden_layers=1), layer_idx=0)
    hf.load_state_dict(ours.state_dict())
    return {"ours": ours, "transformers": hf}


def _fwd_bwd(block, x):
    block(x).square().mean().backward()


def run() -> list[dict]:
    blocks = _pair()
    x = torch.randn(B, L, D_MODEL, generator=torch.Generator().manual_seed(1), requires_grad=True)
    speed, memory = {}, {}
    for name, block in blocks.items():
        _fwd_bwd(block, x)  # warm-up
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            _fwd_bwd(block, x)
            times.append(time.perf_counter() - t0)
        speed[name] = B * L / float(np.median(times))
        mode = PeakMemory()
        with mode:
            _fwd_bwd(block, x)
        memory[name] = mode.peak / 2**20
    what = f"Mamba block fwd+bwd, batch {B} x {L} tokens, d_model {D_MODEL}, N 16"
    return [
        {"benchmark": what, "ours": speed["ours"], "baseline": speed["transformers"],
         "unit": "tokens/s (vs transformers MambaMixer, PyTorch path)", "ratio": speed["ours"] / speed["transformers"]},
        {"benchmark": what, "ours": memory["ours"], "baseline": memory["transformers"],
         "unit": "MiB peak extra (ratio transformers / ours)", "ratio": memory["transformers"] / memory["ours"]},
    ]
