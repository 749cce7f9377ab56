"""Merging a low-rank update into the weights: trainable parameters, identical outputs, and the
inference latency of the merged model against the plain one (LoRA, arXiv 2106.09685, §4.1).

Needs a `MergeableAdapter` that is also a `LanguageModel` (scored on its `corpus_domain` where it
is `ScoredOnDomain`). Protocol:
- parameters: the agent's trainable parameters (what fine-tuning trained) and its base model's;
  `trainable_ratio` = base / trainable (full fine-tuning: 1). An agent that trained nothing
  reports no ratio;
- outputs: the next-token logits on the first `tokens` predictions of the validation split
  (consecutive windows of the model's block size, in batches of `batch_size`), computed unmerged,
  merged (`merge()`, once for all batches), unmerged again (`unmerge()`), and by the plain model (`plain()`: the
  pre-trained architecture with the update merged and the adapters removed); the largest absolute
  difference to the unmerged logits per batch are the samples, their maxima the metrics
  (`merged_max_abs_diff`, `roundtrip_max_abs_diff`, `plain_max_abs_diff`);
- latency: the forward pass of one batch of `latency_batch` windows, timed `latency_repeats`
  times for each of unmerged, merged and plain in rotating order (after `warmup` untimed passes
  each), without gradients, `merged` on a merged copy of the agent; the medians (`latency_ms_*`) and their ratios to the plain model's
  (`latency_ratio_merged`, `latency_ratio_unmerged`) derive from the per-pass times. Timings
  vary with the machine: a tier names them in `verify_timings`.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import LanguageModel, MergeableAdapter, ScoredOnDomain, capability
from evals.evaluators import Measured, register
from evals.record import EvalResult
from evals.tasks import code_corpus, code_domains

VARIANTS = ("unmerged", "merged", "plain")


class LoraMergeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(8192, ge=1)
    batch_size: int = Field(8, ge=1)
    latency_batch: int = Field(1, ge=1)
    latency_repeats: int = Field(30, ge=1)
    warmup: int = Field(3, ge=0)


def summarise(samples: dict[str, list[float]], trainable: int, base: int) -> dict[str, float]:
    metrics = {"trainable_parameters": float(trainable), "base_parameters": float(base)}
    if trainable > 0:
        metrics["trainable_ratio"] = base / trainable
    for what in ("merged", "roundtrip", "plain"):
        metrics[f"{what}_max_abs_diff"] = max(samples[f"{what}_abs_diff_by_batch"])
    medians = {v: statistics.median(samples[f"latency_ms_{v}_by_pass"]) for v in VARIANTS}
    for v in VARIANTS:
        metrics[f"latency_ms_{v}"] = medians[v]
    metrics["latency_ratio_merged"] = medians["merged"] / medians["plain"]
    metrics["latency_ratio_unmerged"] = medians["unmerged"] / medians["plain"]
    return metrics


def derive(result: EvalResult) -> dict[str, float]:
    if not result.samples:
        return {}
    p = result.protocol
    return summarise(result.samples, p["trainable_parameters"], p["base_parameters"])


def metric_names(o: LoraMergeOptions) -> list[str]:
    return ["trainable_parameters", "base_parameters", "trainable_ratio", "merged_max_abs_diff",
            "roundtrip_max_abs_diff", "plain_max_abs_diff", "latency_ms_*", "latency_ratio_merged",
            "latency_ratio_unmerged"]


def _time_ms(fn, x: torch.Tensor) -> float:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    t0 = time.perf_counter()
    fn(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return 1000 * (time.perf_counter() - t0)


@register("lora_merge", version=1, options=LoraMergeOptions, derive=derive, metric_names=metric_names)
@torch.no_grad()
def lora_merge(agent, config, options: LoraMergeOptions) -> Measured:
    agent = capability(agent, MergeableAdapter, "lora_merge")
    lm = capability(agent, LanguageModel, "lora_merge")
    domain = agent.corpus_domain if isinstance(agent, ScoredOnDomain) else ""
    split = code_domains.token_split("validation", domain, lm.tokenizer_name, lm.bpe_vocab_size, lm.val_percent)
    device = next(lm.parameters()).device
    was_training = lm.training
    lm.eval()
    plain = agent.plain().to(device).eval()
    batches = [x.to(device) for x, _ in code_corpus.fixed_windows(split.tokens, options.tokens, lm.block_size,
                                                                   options.batch_size)]
    refs = [lm(x)[0].float() for x in batches]
    agent.merge()  # once: every batch merged, then every batch unmerged again
    merged = [lm(x)[0].float() for x in batches]
    agent.unmerge()
    again = [lm(x)[0].float() for x in batches]
    diffs = {"merged": [(m - r).abs().max().item() for m, r in zip(merged, refs)],
             "roundtrip": [(a - r).abs().max().item() for a, r in zip(again, refs)],
             "plain": [(plain(x)[0].float() - r).abs().max().item() for x, r in zip(batches, refs)]}

    x = batches[0][: options.latency_batch]
    if x.size(0) < options.latency_batch:
        raise ValueError(f"lora_merge: latency_batch={options.latency_batch} windows asked, "
                         f"{options.tokens} tokens give {x.size(0)}")
    merged_copy = copy.deepcopy(agent)  # the agent merged, timed beside the agent unmerged
    merged_copy.merge()
    runners = {"unmerged": lm, "merged": merged_copy, "plain": plain}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(options.warmup):
        for v in VARIANTS:
            runners[v](x)
    for i in range(options.latency_repeats):  # rotate the order, so no variant always goes first
        for v in VARIANTS[i % 3:] + VARIANTS[: i % 3]:
            times[v].append(_time_ms(runners[v], x))
    del merged_copy
    lm.train(was_training)

    samples = {f"{what}_abs_diff_by_batch": values for what, values in diffs.items()}
    samples |= {f"latency_ms_{v}_by_pass": times[v] for v in VARIANTS}
    trainable, base = agent.trainable_parameters(), agent.base_parameters()
    return Measured(metrics=summarise(samples, trainable, base), samples=samples,
                    protocol={"trainable_parameters": trainable, "base_parameters": base,
                              "corpus": code_domains.fingerprint(domain, lm.val_percent), "split": "validation",
                              "domain": domain, "tokens": sum(b.numel() for b in batches), "window": lm.block_size,
                              "batch_size": options.batch_size, "latency_batch": options.latency_batch,
                              "latency_repeats": options.latency_repeats, "warmup": options.warmup,
                              "timing": "time.perf_counter around one forward pass without gradients "
                                        "(CUDA synchronised), median over passes; merged: a merged copy of the agent", "device": str(device)})
