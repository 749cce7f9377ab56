"""Training throughput of a language model: tokens per second of its training computation, the
forward pass, the cross-entropy and the backward pass, timed by the harness the same way for every
model, arm and seed.

Protocol: one batch of `batch_size` consecutive windows of the model's block (or `window` tokens)
from the start of the code corpus's train split (`data: corpus`, in the model's tokenizer) or of
FineWeb's train shards under `root` (`data: fineweb`, GPT-2 token ids, for a model trained on them); `warmup` untimed steps (compilation, autotuning,
allocator), then `steps` timed steps, each synchronised with the device before its clock stops.
On a GPU the steps run under the `autocast` the options name (the precision the model trained in);
on a CPU autocast is not used. The optimiser step is not timed (it does not depend on the model's
layers, only on its parameter count), so the model's weights are untouched; its gradients are
cleared after. The samples are the step times; the throughput is the batch's tokens over their
median. On a GPU the peak memory allocated during each timed step is kept too; the metric is
their mean (the steps are alike, so it is the peak of any of them).

Agents that are not language models are not scored: the result then has no metrics and says why.
"""

from __future__ import annotations

import statistics
import time
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import LanguageModel
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks import code_corpus, fineweb

AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainThroughputOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_size: int = Field(8, ge=1)
    window: int = Field(0, ge=0)         # tokens per window; 0: the model's block size
    warmup: int = Field(5, ge=0)
    steps: int = Field(20, ge=1)
    autocast: Literal["none", "bf16", "fp16"] = "none"
    data: Literal["corpus", "fineweb"] = "corpus"
    root: str = "data/fineweb10B"        # data fineweb: the shards' folder (evals/tasks/fineweb.py)


def derive(result: EvalResult) -> dict[str, float]:
    """The throughput from the timed steps: the batch's tokens over the median step time."""
    if not result.samples:
        return {}
    return {"train_tokens_per_s": result.protocol["tokens_per_step"] / statistics.median(result.samples["step_seconds"])}


def tiny(options: TrainThroughputOptions) -> TrainThroughputOptions:
    """A dry run's budget: one untimed and one timed step on one short window."""
    small = shrunk(options, batch_size=1, warmup=1, steps=1)
    return small.model_copy(update={"window": 64 if small.window == 0 else min(small.window, 64)})


def check(agent, config, options: TrainThroughputOptions) -> list[str]:
    """The tier's batch fits the train split, in windows no longer than the model's block."""
    if not isinstance(agent, LanguageModel):
        return []
    window = options.window or agent.block_size
    if window > agent.block_size:
        return [f"train_throughput: window={window} exceeds the model's block size {agent.block_size}"]
    if options.data == "fineweb":
        return [f"train_throughput: {m}" for m in fineweb.missing(options.root)]
    split = code_corpus.token_split("train", agent.tokenizer_name, agent.bpe_vocab_size, agent.val_percent)
    if options.batch_size * window + 1 > len(split.tokens):
        return [f"train_throughput: a batch of {options.batch_size} x {window} tokens does not fit the train split "
                f"({len(split.tokens):,} tokens)"]
    return []


def _batch(agent, options: TrainThroughputOptions, window: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The timed batch (inputs, next tokens) and where it comes from."""
    if options.data == "fineweb":
        x, y = next(fineweb.train_windows(options.root, options.batch_size, window))
        return x, y, fineweb.fingerprint(options.root)
    split = code_corpus.token_split("train", agent.tokenizer_name, agent.bpe_vocab_size, agent.val_percent)
    x, y = next(code_corpus.fixed_windows(split.tokens, options.batch_size * window, window, options.batch_size))
    return x, y, code_corpus.fingerprint(agent.val_percent)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@register("train_throughput", version=2, options=TrainThroughputOptions, derive=derive, tiny=tiny, check=check,
          metric_names=lambda o: ["train_tokens_per_s", "train_peak_memory_gib"])
def train_throughput(agent, config, options: TrainThroughputOptions) -> Measured:
    if not isinstance(agent, LanguageModel):
        return Measured(metrics={},
                        protocol={"scored": False, "reason": f"{type(agent).__name__} is not a language model"})
    problems = check(agent, config, options)
    if problems:
        raise ValueError("; ".join(problems))
    window = options.window or agent.block_size
    x, y, source = _batch(agent, options, window)
    device = next(agent.parameters()).device
    x, y = x.to(device), y.to(device)
    dtype = AUTOCAST[options.autocast] if device.type == "cuda" else None
    was_training = agent.training
    agent.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = agent(x)[0]
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()

    for _ in range(options.warmup):
        step()
    times, peaks = [], []
    for _ in range(options.steps):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if device.type == "cuda":
            peaks.append(torch.cuda.max_memory_allocated(device) / 2**30)
    samples = {"step_seconds": times}
    metrics = {}
    if peaks:  # per step, so that the metric recomputes from its samples like every other
        samples["train_peak_memory_gib"] = peaks
        metrics["train_peak_memory_gib"] = statistics.fmean(peaks)
    for p in agent.parameters():
        p.grad = None
    agent.train(was_training)
    tokens = options.batch_size * window
    metrics["train_tokens_per_s"] = tokens / statistics.median(times)
    return Measured(metrics=metrics, samples=samples,
                    protocol={"corpus": source, "split": "train",
                              "tokenizer": agent.tokenizer_name, "batch_size": options.batch_size, "window": window,
                              "tokens_per_step": tokens, "warmup": options.warmup, "steps": options.steps,
                              "timed": "forward + cross-entropy + backward, device-synchronised, median step",
                              "autocast": options.autocast if dtype is not None else "none",
                              "device": str(device)})
