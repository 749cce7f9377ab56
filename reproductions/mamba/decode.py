"""The mini tier's decoding-cost measurement (Section 3.5, 4.5 and Figure 8, right, at CPU scale):
seconds to generate one token after a context of n tokens, for Mamba's recurrent step (a state of
fixed size, so the cost is flat in n) and for attention decoding with a key/value cache (the GPT
of `reproductions/transformer/gpt.py`, whose cache grows by one key and value per token and is read
whole by each new query), both with 2 layers of width 64, batch 1, one CPU thread.

For each n: the context (random tokens) is read once (Mamba: the parallel scan, keeping the last
state; the GPT: one forward pass filling its caches), then `new_tokens` tokens are generated one at
a time, each step timed alone; a point is the median step time over `repeats` such runs. Weights
are untrained (the cost does not depend on them). The result is a `DecodeCostMeasurements`
(evals/contract.py) for the `decode_cost` evaluator; the run also logs each point (step i: the
i-th context length, logged as `context_length` beside the timings) and draws `decode_cost.png`
(milliseconds per token against the context length).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from evals.contract import RunContext
from reproductions.mamba.model import MambaConfig, MambaLM
from reproductions.transformer.gpt import GPT, GPTConfig


@dataclass
class Config:
    context_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096, 8192])
    new_tokens: int = 16             # tokens generated (and timed) after each context
    repeats: int = 3
    vocab_size: int = 18
    d_model: int = 64
    n_layer: int = 2
    d_state: int = 16
    n_head: int = 4                  # the GPT's heads


class DecodeCost:
    """The measurements: seconds per generated token, per method and context length."""

    ours = "mamba"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.seconds_per_token: dict[str, dict[int, float]] = {}
        self.measurement = (f"median wall time of one decoding step (batch 1, {cfg.new_tokens} steps x {cfg.repeats} "
                            f"repeats after reading the context), {cfg.n_layer} layers of width {cfg.d_model}: Mamba's "
                            f"recurrent step (state size fixed) vs the GPT with a key/value cache "
                            f"(reproductions/transformer/gpt.py); CPU, torch threads {torch.get_num_threads()}")

    def num_parameters(self) -> int:
        return 0

    def save(self, path) -> None:
        save_file({f"{m}.{n}": torch.tensor(v, dtype=torch.float64) for m, row in self.seconds_per_token.items()
                   for n, v in row.items()}, str(path))

    def load(self, path) -> "DecodeCost":
        for key, value in load_file(str(path)).items():
            method, n = key.split(".")
            self.seconds_per_token.setdefault(method, {})[int(n)] = value.item()
        return self


def models(cfg: Config) -> dict[str, torch.nn.Module]:
    mamba = MambaLM(MambaConfig(vocab_size=cfg.vocab_size, d_model=cfg.d_model, n_layer=cfg.n_layer, d_state=cfg.d_state))
    gpt = GPT(GPTConfig(vocab_size=cfg.vocab_size, block_size=max(cfg.context_lengths) + cfg.new_tokens + 1,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.d_model))
    return {"mamba": mamba.eval(), "attention": gpt.eval()}


@torch.no_grad()
def _step_times(method: str, model, context: torch.Tensor, new_tokens: int) -> list[float]:
    """Read `context` (1, n), then time `new_tokens` single-token steps (greedy)."""
    times = []
    if method == "mamba":
        logits, state = model.prefill(context)
        token = logits[:, -1].argmax(-1)
        for _ in range(new_tokens):
            t0 = time.perf_counter()
            logits, state = model.step(token, state)
            token = logits.argmax(-1)
            times.append(time.perf_counter() - t0)
    else:
        caches = [{} for _ in model.blocks]
        logits, _ = model(context, caches=caches)
        token = logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(new_tokens):
            t0 = time.perf_counter()
            logits, _ = model(token, caches=caches)
            token = logits[:, -1].argmax(-1, keepdim=True)
            times.append(time.perf_counter() - t0)
    return times


def build(cfg: Config) -> DecodeCost:
    return DecodeCost(cfg)


def train(cfg: Config, run: RunContext) -> DecodeCost:
    """Measure (nothing is trained): every method at every context length."""
    result = DecodeCost(cfg)
    nets = {m: net.to(run.device) for m, net in models(cfg).items()}
    contexts = torch.Generator().manual_seed(run.seed)
    run.progress(len(cfg.context_lengths), unit="length")
    for i, n in enumerate(cfg.context_lengths, start=1):
        context = torch.randint(cfg.vocab_size, (1, n), generator=contexts).to(run.device)
        for method, net in nets.items():
            _step_times(method, net, context[:, :64], 2)  # warm-up
            times = [t for _ in range(cfg.repeats) for t in _step_times(method, net, context, cfg.new_tokens)]
            result.seconds_per_token.setdefault(method, {})[n] = float(np.median(times))
        # step i is the i-th context length: the length itself is the value a re-execution compares
        run.log(i, context_length=float(n), **{f"decode_ms_{m}": row[n] * 1e3 for m, row in result.seconds_per_token.items()})
        run.advance()
    _plot(result, Path(run.dir) / "decode_cost.png")
    return result


def _plot(result: DecodeCost, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, row in result.seconds_per_token.items():
        ns = sorted(row)
        ax.plot(ns, [row[n] * 1e3 for n in ns], marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("ms per generated token")
    ax.set_title("Decoding cost per token")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def data_fingerprint(cfg: Config) -> str:
    return "random token contexts from the run's seed (no data)"
