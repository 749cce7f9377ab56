"""Token accuracy on held-out sequences of a synthetic task (selective copying, induction heads),
at the training length and at lengths beyond it (extrapolation).

Protocol: `n` sequences per length drawn by `evals.tasks.sequence_tasks` from a generator seeded
with `heldout_seed` (never the run's seed: training batches come from the run's own stream), with
the task's settings read from the run's config (`n_data`, `n_memorize`); the arg-max of the
agent's `next_token_logits(tokens)` at every scored position, in batches of `batch_size`. Each
sequence's share of correct scored positions is a sample (`<prefix>accuracy_L<length>`), so every
metric is the mean of its samples (every sequence has the same number of scored positions).

A tier may hold arms trained on different tasks: an agent whose config names another task (or
no task) is not scored by this evaluator, and the result says so.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import SequenceModel, capability
from evals.evaluators import Measured, register
from evals.tasks import sequence_tasks


class SequenceAccuracyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str
    lengths: list[int] = Field(min_length=1)
    n: int = Field(512, ge=1)
    batch_size: int = Field(64, ge=1)
    heldout_seed: int = 12345
    prefix: str = ""


def _names(o: SequenceAccuracyOptions) -> list[str]:
    return [f"{o.prefix}accuracy_L{n}" for n in o.lengths]


@register("sequence_accuracy", version=1, options=SequenceAccuracyOptions, metric_names=_names)
def sequence_accuracy(agent, config, options: SequenceAccuracyOptions) -> Measured:
    if options.task not in sequence_tasks.TASKS:
        raise ValueError(f"sequence_accuracy: unknown task {options.task!r} (known: {', '.join(sequence_tasks.TASKS)})")
    trained_on = getattr(config, "task", None)
    if trained_on != options.task:
        return Measured(metrics={}, protocol={"task": options.task, "not_scored": f"the run trained on task {trained_on!r}"})
    model = capability(agent, SequenceModel, "sequence_accuracy")
    metrics, samples = {}, {}
    for length in options.lengths:
        g = torch.Generator().manual_seed(options.heldout_seed + length)
        per_seq = []
        for start in range(0, options.n, options.batch_size):
            m = min(options.batch_size, options.n - start)
            x, y = sequence_tasks.generate(options.task, m, length, g, n_data=config.n_data,
                                           n_memorize=getattr(config, "n_memorize", 8))
            with torch.no_grad():
                pred = model.next_token_logits(x).argmax(-1).cpu()
            scored = y != sequence_tasks.IGNORE
            per_seq += ((pred == y) & scored).sum(1).div(scored.sum(1)).tolist()
        name = f"{options.prefix}accuracy_L{length}"
        metrics[name], samples[name] = sum(per_seq) / len(per_seq), per_seq
    return Measured(metrics=metrics, samples=samples, protocol={
        "task": options.task, "lengths": options.lengths, "n": options.n, "heldout_seed": options.heldout_seed,
        "n_data": config.n_data, "n_memorize": getattr(config, "n_memorize", None),
        "training_length": getattr(config, "length", None),
        "scoring": "arg-max of next_token_logits at the scored positions; a sample is one sequence's share correct",
    })
