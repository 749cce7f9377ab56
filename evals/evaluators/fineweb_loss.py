"""Validation loss on FineWeb, as the NanoGPT speedrun measures it: nats per GPT-2 token.

Protocol (modded-nanogpt's `val_loss`): the first `tokens` predictions of the validation shards
under `root` (`evals/tasks/fineweb.py`; the speedrun's 10,485,760), cut into consecutive
non-overlapping windows of `window` tokens (the speedrun's 1,024; at most the model's block size),
in batches of `batch_size` windows; the mean cross-entropy over all of them. Every batch holds the
same number of tokens, so the metric is the mean of the per-batch losses, which are the samples.
The agent is a `LanguageModel` (evals/contract.py) whose tokenizer is GPT-2's (`tokenizer_name`
"gpt2"): the shards hold GPT-2 token ids already, so nothing is tokenised here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import LanguageModel, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks import fineweb


class FinewebLossOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: str = "data/fineweb10B"
    tokens: int = Field(10_485_760, ge=1)
    window: int = Field(1024, ge=1)
    batch_size: int = Field(8, ge=1)


def derive(result: EvalResult) -> dict[str, float]:
    losses = result.samples.get("batch_loss", [])
    return {"val_loss": sum(losses) / len(losses)} if losses else {}


def tiny(options: FinewebLossOptions) -> FinewebLossOptions:
    """A dry run's budget: one batch of two windows."""
    return shrunk(options, tokens=2 * options.window, batch_size=2)


def check(agent, config, options: FinewebLossOptions) -> list[str]:
    """What in the options cannot work with this model (the shards' size is checked when they are read)."""
    problems = []
    block = getattr(agent, "block_size", None)
    if block is not None and options.window > block:
        problems.append(f"windows of {options.window} tokens exceed the model's block size {block}")
    if options.tokens % (options.window * options.batch_size):
        problems.append(f"tokens={options.tokens:,} are not whole batches of {options.batch_size} windows of {options.window}")
    return problems


@register("fineweb_loss", version=1, options=FinewebLossOptions, derive=derive, tiny=tiny, check=check,
          metric_names=lambda o: ["val_loss"])
@torch.no_grad()
def fineweb_loss(agent, config, options: FinewebLossOptions) -> Measured:
    model = capability(agent, LanguageModel, "fineweb_loss")
    if model.tokenizer_name != "gpt2":
        raise ValueError(f"fineweb_loss scores GPT-2 token ids; the model's tokenizer is {model.tokenizer_name!r}")
    if problems := check(model, config, options):
        raise ValueError("fineweb_loss: " + "; ".join(problems))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    for x, y in fineweb.validation_windows(options.root, options.tokens, options.window, options.batch_size):
        logits = model(x.to(device))[0]
        losses.append(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten().to(device)).item())
    model.train(was_training)
    return Measured(metrics={"val_loss": sum(losses) / len(losses)}, samples={"batch_loss": losses},
                    protocol={"corpus": fineweb.fingerprint(options.root), "split": "validation", "tokens": options.tokens,
                              "window": options.window, "batch_size": options.batch_size,
                              "windows": "consecutive, non-overlapping, from the first validation shard's start"})
