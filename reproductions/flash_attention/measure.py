"""The mini tier's experiment: extra memory and speed of attention (forward + backward) against
sequence length, for naive attention, our tiled FlashAttention and torch's fused
`scaled_dot_product_attention`, in one process.

Memory is counted like tracemalloc counts Python objects: a `TorchDispatchMode` sees every tensor
an operator creates (forward and backward), adds its storage's bytes when it first appears and
subtracts them when the storage is freed (a weak reference on the storage, which also lives while
autograd keeps it for the backward pass). The peak of that running total, with the inputs
allocated before the call excluded, is the call's extra memory. It counts tensors only: scratch
space a fused kernel allocates inside itself is invisible to it, which is why the memory
comparison is between naive and tiled attention, whose every tensor passes through the dispatcher.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from reproductions.flash_attention.flash import flash_attention
from reproductions.transformer.layers import naive_attention

METHODS = {
    "naive": naive_attention,
    "tiled": flash_attention,
    "sdpa": lambda q, k, v, causal=False: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
}


@dataclass
class Config:
    memory_seq_lens: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384])
    speed_seq_lens: list[int] = field(default_factory=lambda: [512, 1024, 2048])
    head_dim: int = 64
    memory_heads: int = 1
    speed_heads: int = 4
    block: int = 256                # query and key block of the tiled kernel
    causal: bool = False
    repeats: int = 3                # timed repeats per point (the median is kept)


class PeakMemory(TorchDispatchMode):
    """Live bytes of the tensor storages created inside the mode, and their peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and key not in self._seen:
                    self._seen.add(key)
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, nbytes)
        return out


def _inputs(heads: int, n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q, k, v, grad = (torch.randn(1, heads, n, d, generator=g) for _ in range(4))
    return [t.requires_grad_() for t in (q, k, v)], grad


def _forward_backward(method: str, qkv, grad, cfg: Config) -> None:
    fn = METHODS[method]
    out = fn(*qkv, causal=cfg.causal, block_q=cfg.block, block_k=cfg.block) if method == "tiled" else fn(*qkv, causal=cfg.causal)
    out.backward(grad)
    for t in qkv:
        t.grad = None


def peak_extra_bytes(method: str, n: int, cfg: Config, seed: int) -> int:
    qkv, grad = _inputs(cfg.memory_heads, n, cfg.head_dim, seed)
    mode = PeakMemory()
    with mode:
        _forward_backward(method, qkv, grad, cfg)
    return mode.peak


def tokens_per_second(method: str, n: int, cfg: Config, seed: int) -> float:
    qkv, grad = _inputs(cfg.speed_heads, n, cfg.head_dim, seed)
    _forward_backward(method, qkv, grad, cfg)  # warm-up
    times = []
    for _ in range(cfg.repeats):
        t0 = time.perf_counter()
        _forward_backward(method, qkv, grad, cfg)
        times.append(time.perf_counter() - t0)
    return n / float(np.median(times))


def max_abs_error(cfg: Config, seed: int, n: int = 300) -> float:
    """Tiled against naive attention, outputs and gradients, at one length."""
    qkv, grad = _inputs(2, n, cfg.head_dim, seed)
    results = []
    for fn in (lambda *a: naive_attention(*a, causal=cfg.causal),
               lambda *a: flash_attention(*a, causal=cfg.causal, block_q=64, block_k=64)):
        out = fn(*qkv)
        results.append([out, *torch.autograd.grad(out, qkv, grad)])
    return max((a - b).abs().max().item() for a, b in zip(*results))


class AttentionCost:
    """The measurements: peak extra bytes per (method, length) and tokens/s per (method, length)."""

    measurement = (f"peak extra bytes of tensor storages created during forward + backward (a TorchDispatchMode "
                   f"ledger, inputs excluded); tokens/s = N / median wall time of forward + backward; CPU, "
                   f"{torch.get_num_threads()} thread(s) at import")

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.memory: dict[str, dict[int, float]] = {}
        self.speed: dict[str, dict[int, float]] = {}
        self.max_abs_error = float("nan")

    def num_parameters(self) -> int:
        return 0

    def save(self, path) -> None:
        tensors = {f"{kind}.{m}.{n}": torch.tensor(v, dtype=torch.float64)
                   for kind, table in (("memory", self.memory), ("speed", self.speed))
                   for m, row in table.items() for n, v in row.items()}
        tensors["max_abs_error"] = torch.tensor(self.max_abs_error, dtype=torch.float64)
        save_file(tensors, str(path))

    def load(self, path) -> "AttentionCost":
        for key, value in load_file(str(path)).items():
            if key == "max_abs_error":
                self.max_abs_error = value.item()
                continue
            kind, method, n = key.split(".")
            getattr(self, kind).setdefault(method, {})[int(n)] = value.item()
        return self

    def table(self) -> str:
        lines = ["| N | naive MiB | tiled MiB | naive tok/s | tiled tok/s | sdpa tok/s |", "|---|---|---|---|---|---|"]
        for n in sorted(set(self.cfg.memory_seq_lens) | set(self.cfg.speed_seq_lens)):
            cells = [self.memory.get(m, {}).get(n) for m in ("naive", "tiled")]
            cells = [f"{c / 2**20:.1f}" if c is not None else "" for c in cells]
            cells += [f"{self.speed[m][n]:.0f}" if n in self.speed.get(m, {}) else "" for m in METHODS]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        for m, row in self.memory.items():
            ns = sorted(row)
            a.loglog(ns, [row[n] / 2**20 for n in ns], "o-", label=m)
        a.set(xlabel="sequence length N", ylabel="peak extra memory (MiB), forward + backward", title="memory")
        for m, row in self.speed.items():
            ns = sorted(row)
            b.plot(ns, [row[n] for n in ns], "o-", label=m)
        b.set(xlabel="sequence length N", ylabel="tokens / s, forward + backward", title="speed (CPU, 1 thread)")
        for ax in (a, b):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def build(cfg: Config) -> AttentionCost:
    return AttentionCost(cfg)


def train(cfg: Config, run) -> AttentionCost:
    """Measure (nothing is trained): memory at every memory length, then speed at every speed length."""
    cost = build(cfg)
    run.progress(len(cfg.memory_seq_lens) * 2 + len(cfg.speed_seq_lens) * len(METHODS), unit="point")
    cost.max_abs_error = max_abs_error(cfg, run.seed)
    for n in cfg.memory_seq_lens:
        for m in ("naive", "tiled"):
            cost.memory.setdefault(m, {})[n] = peak_extra_bytes(m, n, cfg, run.seed)
            run.advance()
        run.log(n, **{f"memory_mib_{m}": cost.memory[m][n] / 2**20 for m in ("naive", "tiled")})
    for n in cfg.speed_seq_lens:
        for m in METHODS:
            cost.speed.setdefault(m, {})[n] = tokens_per_second(m, n, cfg, run.seed)
            run.advance()
        run.log(n, **{f"tokens_per_s_{m}": cost.speed[m][n] for m in METHODS})
    (run.dir / "attention_cost.md").write_text(cost.table())
    cost.plot(run.dir / "attention_cost.png")
    return cost


def data_fingerprint(cfg: Config) -> str:
    return f"random normal q, k, v (1 x heads x N x {cfg.head_dim}), fp32, seeded by the run's seed"
