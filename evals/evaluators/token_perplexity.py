"""Perplexity on the validation split of a pre-tokenised corpus on disk (`evals.tasks.token_files`,
e.g. the Pile with the GPT-NeoX tokenizer, as in Mamba's Table 3).

Protocol: the first `tokens` predictions of `<config.data_root>/validation.bin`, cut into
consecutive non-overlapping windows of `window` tokens (0: the run's `context`), each window
predicted from its own earlier tokens only, in batches of `batch_size` windows; the mean
cross-entropy per token in nats (`<prefix>val_loss`) and its exponential
(`<prefix>perplexity`). A sample is one window's mean loss; every window holds `window`
predictions, so the loss is the mean of the samples and the perplexity recomputes from them
(`derive`). The agent needs `next_token_logits(tokens)` (a `SequenceModel`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import SequenceModel, capability
from evals.evaluators import Measured, register
from evals.record import EvalResult
from evals.tasks import token_files


class TokenPerplexityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(1_048_576, ge=1)
    window: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    prefix: str = ""


def derive(result: EvalResult) -> dict[str, float]:
    pre = result.protocol.get("prefix", "")
    losses = result.samples.get(f"{pre}window_loss")
    if not losses:
        return {}
    loss = sum(losses) / len(losses)
    return {f"{pre}val_loss": loss, f"{pre}perplexity": math.exp(loss)}


@register("token_perplexity", version=1, options=TokenPerplexityOptions, derive=derive,
          metric_names=lambda o: [f"{o.prefix}val_loss", f"{o.prefix}perplexity"])
def token_perplexity(agent, config, options: TokenPerplexityOptions) -> Measured:
    model = capability(agent, SequenceModel, "token_perplexity")
    data = token_files.tokens(config.data_root, "validation")
    window = options.window or config.context
    n_windows = min(options.tokens, len(data) - 1) // window
    if n_windows < 1:
        raise ValueError(f"token_perplexity: {len(data)} validation tokens are fewer than one window of {window}")
    losses = []
    for start in range(0, n_windows, options.batch_size):
        rows = range(start, min(n_windows, start + options.batch_size))
        x = torch.from_numpy(np.stack([np.asarray(data[r * window:(r + 1) * window + 1], dtype=np.int64) for r in rows]))
        with torch.no_grad():
            logits = model.next_token_logits(x[:, :-1]).float().cpu()
        nll = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none").view(len(rows), window)
        losses += nll.mean(1).tolist()
    pre = options.prefix
    loss = sum(losses) / len(losses)
    return Measured(metrics={f"{pre}val_loss": loss, f"{pre}perplexity": math.exp(loss)},
                    samples={f"{pre}window_loss": losses},
                    protocol={"prefix": pre, "window": window, "windows": len(losses), "tokens": len(losses) * window,
                              "batch_size": options.batch_size, "data": token_files.fingerprint(config.data_root)})
