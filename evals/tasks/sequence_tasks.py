"""Synthetic sequence tasks of the state-space-model literature, as Mamba (arXiv 2312.00752,
Section 4.1 and Appendix E.1) uses them: what a paper's training and the `sequence_accuracy`
evaluator both draw from.

Each generator returns `(inputs, targets)`, long tensors (n, T): `inputs` the tokens a causal
model reads, `targets` the token it must predict at each position, `IGNORE` (-100, PyTorch's
cross-entropy default) where nothing is scored. Token accuracy is the share of scored positions
whose arg-max prediction equals the target.

- Selective copying (Table 1; Figure 2, bottom left): `length` positions hold `n_memorize` data
  tokens at random, distinct, sorted positions and the noise token 0 elsewhere; then
  `n_memorize` copy markers follow, at which the model must output the data tokens in order.
  Data tokens are 1..n_data, the marker n_data + 1: a vocabulary of n_data + 2.
- Induction heads (Table 2; Figure 2, right; Olsson et al. 2022): `length` random tokens from
  1..n_data - 1 where the trigger token 0 occurs twice, at a random position p (followed by the
  answer token) and at the last position; the model must predict, at the last position, the token
  that followed the first trigger. A vocabulary of n_data.

Generators draw only from the `torch.Generator` they are given, so training batches (seeded by
the run) and held-out sets (seeded by the evaluator, `heldout_seed`) never share a stream.
"""

from __future__ import annotations

import torch

IGNORE = -100
TASKS = ("selective_copying", "induction_heads")


def vocab_size(task: str, n_data: int) -> int:
    if task == "selective_copying":
        return n_data + 2
    if task == "induction_heads":
        return n_data
    raise ValueError(f"unknown sequence task {task!r} (known: {', '.join(TASKS)})")


def selective_copying(n: int, length: int, n_memorize: int, n_data: int, generator: torch.Generator):
    """(inputs, targets) of shape (n, length + n_memorize)."""
    if length < n_memorize:
        raise ValueError(f"selective copying: length {length} < {n_memorize} tokens to memorise")
    data = torch.randint(1, n_data + 1, (n, n_memorize), generator=generator)
    positions = torch.rand(n, length, generator=generator).argsort(dim=1)[:, :n_memorize].sort(dim=1).values
    seq = torch.zeros(n, length, dtype=torch.long).scatter_(1, positions, data)
    marker = torch.full((n, n_memorize), n_data + 1, dtype=torch.long)
    inputs = torch.cat([seq, marker], 1)
    targets = torch.cat([torch.full((n, length), IGNORE, dtype=torch.long), data], 1)
    return inputs, targets


def induction_heads(n: int, length: int, n_data: int, generator: torch.Generator):
    """(inputs, targets) of shape (n, length); only the last position is scored."""
    if length < 4:
        raise ValueError(f"induction heads: length {length} < 4")
    seq = torch.randint(1, n_data, (n, length), generator=generator)
    p = torch.randint(0, length - 2, (n,), generator=generator)  # first trigger; its answer at p + 1 < length - 1
    rows = torch.arange(n)
    seq[rows, p] = 0
    seq[:, -1] = 0
    targets = torch.full((n, length), IGNORE, dtype=torch.long)
    targets[:, -1] = seq[rows, p + 1]
    return seq, targets


def generate(task: str, n: int, length: int, generator: torch.Generator, n_data: int, n_memorize: int = 8):
    """A batch of the task by name (`length`: the sequence length before the copy markers)."""
    if task == "selective_copying":
        return selective_copying(n, length, n_memorize, n_data, generator)
    if task == "induction_heads":
        return induction_heads(n, length, n_data, generator)
    raise ValueError(f"unknown sequence task {task!r} (known: {', '.join(TASKS)})")
