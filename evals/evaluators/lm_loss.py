"""Language-model loss on the held-out split of the code corpus: nats per token and bits per byte.

Protocol: the first `tokens` predictions of the validation split (files the model never trained
on), cut into consecutive non-overlapping windows of the model's block size (so a token sees
only the earlier tokens of its own window), in batches of `batch_size` windows; mean
cross-entropy over all of them. Bits per byte divide the total loss in bits by the UTF-8 bytes of
the predicted text (equal to the token count for the byte tokenizer). The same tokens for every
model, arm and seed; the per-batch mean losses are the samples. For reference, the cross-entropy
of the train split's unigram (byte or token) frequencies on the same tokens is reported too.

A model scored on a part of the corpus (`ScoredOnDomain`: `corpus_domain`, read by
`evals.tasks.code_domains`) is scored on that part's validation files instead, the unigram
reference from that part's train files; the protocol then names the domain.

A model that reports statistics of its own over the same tokens (`reset_statistics()` and
`statistics()`, e.g. a mixture of experts' per-expert token shares) has them added to the metrics.

Agents that are not language models (no `tokenizer`) are not scored: the result then has no
metrics and says why.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import LanguageModel, LMEvalModel, PublishedCheckpoint, ReportsStatistics, ScoredOnDomain
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks import code_corpus, code_domains


class LMLossOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(131_072, ge=1)
    batch_size: int = Field(16, ge=1)


@lru_cache(maxsize=4)
def _unigram_logprobs(tokenizer: str, vocab: int, bpe_vocab_size: int, val_percent: int, domain: str = "") -> torch.Tensor:
    counts = torch.bincount(code_domains.token_split("train", domain, tokenizer, bpe_vocab_size, val_percent).tokens.long(),
                            minlength=vocab).double() + 1.0  # add-one: no token has probability zero
    return (counts / counts.sum()).log()


def derive(result: EvalResult) -> dict[str, float]:
    """The token-weighted mean of the batch losses (every batch holds `batch_size` windows of
    `window` tokens but the last, which holds the rest), and bits per byte from it."""
    if not result.samples:
        return {}
    p, losses = result.protocol, result.samples["batch_loss"]
    per_batch = p["batch_size"] * p["window"]
    sizes = [per_batch] * (len(losses) - 1) + [p["tokens"] - per_batch * (len(losses) - 1)]
    if sizes[-1] <= 0 or sizes[-1] > per_batch:
        raise ValueError(f"{len(losses)} batch losses do not fit {p['tokens']} tokens in batches of {per_batch}")
    nats = sum(loss * n for loss, n in zip(losses, sizes))
    return {"val_loss": nats / p["tokens"], "bits_per_byte": nats / math.log(2) / p["bytes"]}


def tiny(options: LMLossOptions) -> LMLossOptions:
    """A dry run's budget: one window of the model's block."""
    return shrunk(options, tokens=1, batch_size=1)


def check(agent, config, options: LMLossOptions) -> list[str]:
    """The tier's `tokens` fit the validation split (the one `lm_loss` scores this model on) in
    windows of the model's block."""
    if not isinstance(agent, LanguageModel):
        return []
    domain = agent.corpus_domain if isinstance(agent, ScoredOnDomain) else ""
    split = code_domains.token_split("validation", domain, agent.tokenizer_name, agent.bpe_vocab_size, agent.val_percent)
    windows = max(1, options.tokens // agent.block_size)
    if windows * agent.block_size + 1 <= len(split.tokens):
        return []
    fits = (len(split.tokens) - 1) // agent.block_size * agent.block_size
    return [f"lm_loss: tokens={options.tokens:,} needs {windows:,} windows of {agent.block_size} tokens, but the "
            f"validation split{f' of {domain}' if domain else ''} holds {len(split.tokens):,} tokens with tokenizer "
            f"{agent.tokenizer_name}"
            + (f" (vocabulary {agent.bpe_vocab_size})" if agent.tokenizer_name == "bpe" else "")
            + f": at most {fits:,} fit"]


# The statistics a model that ReportsStatistics adds to the metrics, by name: a mixture of experts'
# routing balance (expert_share_max, expert_share_min, expert_share_<i>). A new kind adds its pattern.
MODEL_STATISTICS = ["expert_share_*"]


@register("lm_loss", version=1, options=LMLossOptions, derive=derive, tiny=tiny, check=check,
          metric_names=lambda o: ["val_loss", "bits_per_byte", "unigram_bits_per_byte", *MODEL_STATISTICS])
@torch.no_grad()
def lm_loss(agent, config, options: LMLossOptions) -> Measured:
    if not isinstance(agent, LanguageModel):
        return Measured(metrics={},
                          protocol={"scored": False, "reason": f"{type(agent).__name__} is not a language model"})
    tok = agent.tokenizer
    domain = agent.corpus_domain if isinstance(agent, ScoredOnDomain) else ""
    split = code_domains.token_split("validation", domain, agent.tokenizer_name, agent.bpe_vocab_size, agent.val_percent)
    device = next(agent.parameters()).device
    was_training = agent.training
    agent.eval()
    losses, total_nats, n_tokens, n_bytes, unigram_nats = [], 0.0, 0, 0, 0.0
    unigram = _unigram_logprobs(agent.tokenizer_name, tok.vocab_size, agent.bpe_vocab_size, agent.val_percent, domain)
    own_statistics = isinstance(agent, ReportsStatistics)
    if own_statistics:
        agent.reset_statistics()
    for x, y in code_corpus.fixed_windows(split.tokens, options.tokens, agent.block_size, options.batch_size):
        logits = agent(x.to(device))[0]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten().to(device), reduction="sum").item()
        losses.append(loss / y.numel())
        total_nats += loss
        n_tokens += y.numel()
        n_bytes += y.numel() if agent.tokenizer_name == "bytes" else len(tok.decode(y.flatten().tolist()).encode())
        unigram_nats -= unigram[y.flatten()].sum().item()
    agent.train(was_training)
    to_bits = 1.0 / math.log(2)
    metrics = {"val_loss": total_nats / n_tokens, "bits_per_byte": total_nats * to_bits / n_bytes,
               "unigram_bits_per_byte": unigram_nats * to_bits / n_bytes}
    if own_statistics:
        metrics.update(agent.statistics())
    protocol = {"corpus": code_domains.fingerprint(domain, agent.val_percent), "split": "validation",
                "tokenizer": agent.tokenizer_name, "tokens": n_tokens, "bytes": n_bytes,
                "window": agent.block_size, "windows": "consecutive, non-overlapping, from the split's start",
                "batch_size": options.batch_size}
    if domain:
        protocol["domain"] = domain
    return Measured(metrics=metrics, samples={"batch_loss": losses}, protocol=protocol)


class LMEvalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[str] = Field(min_length=1)
    local: bool = True                # tasks from evals/lm_tasks/ (offline JSONL), else lm-eval's standard tasks
    num_fewshot: int | None = None
    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(1, ge=1)  # for Hugging Face checkpoints


def lm_eval_tiny(options: LMEvalOptions) -> LMEvalOptions:
    """A dry run's budget: two documents per task."""
    return shrunk(options, limit=2)


def lm_eval_check(agent, config, options: LMEvalOptions) -> list[str]:
    """Every task the options name is a local task file (`local`) or one of lm-eval's tasks."""
    from evals import lm_eval_bridge as bridge

    if options.local:
        try:
            bridge.local_tasks(options.tasks)
        except ValueError as e:
            return [f"lm_eval: {e}"]
        return []
    known = bridge.standard_task_index()
    unknown = [t for t in options.tasks if t not in known]
    return [f"lm_eval: lm-eval {bridge.lm_eval_version()} has no task {t!r}" for t in unknown]


def lm_eval_stand_in(options: LMEvalOptions, folder) -> tuple[LMEvalOptions, list[str]]:
    """Standard tasks whose datasets are not in the local Hugging Face cache are missing; where any
    is, the evaluator runs on the local tasks (evals/lm_tasks/) of the request types of the tasks
    named, at most 2 shots (the local files are small)."""
    from evals import lm_eval_bridge as bridge

    if options.local:
        return options, []
    missing, stand_ins = [], []
    for task in options.tasks:
        absent = bridge.uncached_datasets(task)
        if absent:
            missing.append(f"lm_eval task {task!r}: dataset(s) {', '.join(absent)} not in the local Hugging Face "
                           f"cache ({bridge.hf_cache_dirs()})")
        stand_ins += bridge.local_stand_ins(task) if absent else []
    if not missing:
        return options, []
    shots = None if options.num_fewshot is None else min(options.num_fewshot, 2)
    return options.model_copy(update={"tasks": sorted(set(stand_ins)), "local": True, "num_fewshot": shots}), missing


@register("lm_eval", version=1, options=LMEvalOptions, tiny=lm_eval_tiny, check=lm_eval_check, stand_in=lm_eval_stand_in,
          metric_names=lambda o: [f"{task}_*" for task in o.tasks])
def lm_eval_tasks(agent, config, options: LMEvalOptions) -> Measured:
    """lm-eval tasks through `evals/lm_eval_bridge.py`: our models as an lm-eval LM, or a published
    Hugging Face checkpoint (an agent with `checkpoint_path`) through lm-eval's own `hf` model.
    Metrics are `<task>_<metric>`; the samples are each document's metric values."""
    from lm_eval import __version__ as lm_eval_version

    from evals import lm_eval_bridge as bridge

    if isinstance(agent, LMEvalModel):   # an lm-eval model of the agent's making (s1: budget-forced generation)
        model = agent.lm_eval_model(batch_size=options.batch_size)
    elif isinstance(agent, PublishedCheckpoint):
        model = bridge.hf_model(agent.checkpoint_path, dtype=agent.dtype, batch_size=options.batch_size)
    elif isinstance(agent, LanguageModel):
        model = bridge.ReproLM(agent)
    else:
        return Measured(metrics={},
                          protocol={"scored": False, "reason": f"{type(agent).__name__} is not a language model"})
    results = bridge.evaluate(model, options.tasks, local=options.local, num_fewshot=options.num_fewshot,
                              limit=options.limit)
    samples = {}
    for task, docs in results.get("samples", {}).items():
        for name in docs[0]["metrics"] if docs else []:
            values = [d.get(name) for d in docs]
            if all(isinstance(v, (int, float)) for v in values):
                samples[f"{task}_{name}"] = [float(v) for v in values]
    return Measured(metrics=bridge.flat_metrics(results), samples=samples,
                      protocol={"lm_eval": lm_eval_version, "tasks": options.tasks,
                                "task_source": "evals/lm_tasks (local JSONL)" if options.local else "lm-eval standard tasks",
                                "task_versions": {k: str(v) for k, v in results.get("versions", {}).items()},
                                "n_shot": {k: v for k, v in results.get("n-shot", {}).items()},
                                "limit": options.limit})
