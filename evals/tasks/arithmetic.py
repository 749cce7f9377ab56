"""Generated arithmetic with worked traces and rule-based rewards, for reasoning learned by
reinforcement learning (DeepSeek-R1, arXiv 2501.12948): what a paper's training and the
`arithmetic_pass` evaluator both draw from.

A problem is a sum of `min_operands`..`max_operands` whole numbers in 0..`max_operand`, written
as a prompt `12+5+33=`. A completion follows R1-Zero's template (Table 1 of the paper): the
reasoning between `<think>` and `</think>`, then the answer between `<answer>` and `</answer>`,
then the end-of-sequence token:

    12+5+33=<think>12+5=17;17+33=50</think><answer>50</answer><eos>

A worked trace keeps a running total; each of its steps (`;`-separated) adds the next 1 ..
`max_group` operands at once, the group sizes drawn at random, so the supervised data mix fine
traces (one addition a step, long) with coarse ones (several additions a step, short, harder to
get right). Rewards are rules, as in the paper's Section 2.2.2: an accuracy reward (the number
inside the first `<answer>` tags equals the sum) and a format reward (the completion is exactly
the template, the thinking between its tags).

Tokens: a character-level vocabulary of the task's own alphabet (digits, `+`, `=`, `;`) plus the
four tags, a padding and an end-of-sequence token, each one token. Prompts are left-padded to a
fixed width, so a prompt always ends at the same position. Generators draw only from the
`torch.Generator` they are given, so training problems (seeded by the run) and held-out problems
(seeded by the evaluator, `heldout_seed`) never share a stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

PAD, EOS = "<pad>", "<eos>"
THINK, END_THINK, ANSWER, END_ANSWER = "<think>", "</think>", "<answer>", "</answer>"
SPECIAL = (PAD, EOS, THINK, END_THINK, ANSWER, END_ANSWER)
ALPHABET = "0123456789+=;"
VOCAB: tuple[str, ...] = SPECIAL + tuple(ALPHABET)
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PAD_ID, EOS_ID = TOKEN_ID[PAD], TOKEN_ID[EOS]
_TOKEN_RE = re.compile("|".join(re.escape(t) for t in SPECIAL) + "|.", re.DOTALL)
_FORMAT_RE = re.compile(rf"{re.escape(THINK)}([0-9+=;]*){re.escape(END_THINK)}{re.escape(ANSWER)}([0-9]+){re.escape(END_ANSWER)}")
_ANSWER_RE = re.compile(rf"{re.escape(ANSWER)}([0-9]+){re.escape(END_ANSWER)}")


# -- tokens ------------------------------------------------------------------------------------
def encode(text: str) -> list[int]:
    """Token ids of `text`; a character outside the vocabulary is a ValueError."""
    ids = []
    for piece in _TOKEN_RE.findall(text):
        if piece not in TOKEN_ID:
            raise ValueError(f"arithmetic: {piece!r} is not in the task's vocabulary ({ALPHABET!r} and the tags)")
        ids.append(TOKEN_ID[piece])
    return ids


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


# -- problems ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    operands: tuple[int, ...]

    @property
    def prompt(self) -> str:
        return "+".join(map(str, self.operands)) + "="

    @property
    def answer(self) -> int:
        return sum(self.operands)


def prompt_width(max_operands: int, max_operand: int) -> int:
    """Tokens of the longest prompt: every prompt is left-padded to it."""
    return max_operands * (len(str(max_operand)) + 1)


def padded_prompt(problem: Problem, width: int) -> list[int]:
    ids = encode(problem.prompt)
    if len(ids) > width:
        raise ValueError(f"arithmetic: prompt {problem.prompt!r} is longer than the width {width}")
    return [PAD_ID] * (width - len(ids)) + ids


def sample_problems(n: int, generator: torch.Generator, min_operands: int = 3, max_operands: int = 5,
                    max_operand: int = 99) -> list[Problem]:
    """`n` problems: the number of operands uniform in min..max_operands, each uniform in 0..max_operand."""
    if not 2 <= min_operands <= max_operands:
        raise ValueError(f"arithmetic: need 2 <= min_operands ({min_operands}) <= max_operands ({max_operands})")
    counts = torch.randint(min_operands, max_operands + 1, (n,), generator=generator).tolist()
    values = torch.randint(0, max_operand + 1, (n, max_operands), generator=generator).tolist()
    return [Problem(tuple(v[:c])) for v, c in zip(values, counts)]


def worked_thinking(operands: tuple[int, ...], groups: list[int]) -> str:
    """The running-total trace: step k adds the next `groups[k]` operands to the total so far."""
    if sum(groups) != len(operands) - 1 or min(groups) < 1:
        raise ValueError(f"arithmetic: groups {groups} do not split the {len(operands) - 1} additions")
    total, rest, steps = operands[0], list(operands[1:]), []
    for g in groups:
        added, rest = rest[:g], rest[g:]
        new = total + sum(added)
        steps.append("+".join(map(str, (total, *added))) + f"={new}")
        total = new
    return ";".join(steps)


def random_groups(additions: int, max_group: int, generator: torch.Generator) -> list[int]:
    """Group sizes uniform in 1..max_group (the last one cut to what is left) that sum to `additions`."""
    groups = []
    while additions > 0:
        g = min(additions, int(torch.randint(1, max_group + 1, (1,), generator=generator)))
        groups.append(g)
        additions -= g
    return groups


def completion(thinking: str, answer: int) -> str:
    """The template of R1-Zero (Table 1): thinking, then the answer, each between its tags."""
    return f"{THINK}{thinking}{END_THINK}{ANSWER}{answer}{END_ANSWER}"


def worked_completion(problem: Problem, max_group: int, generator: torch.Generator) -> str:
    groups = random_groups(len(problem.operands) - 1, max_group, generator)
    return completion(worked_thinking(problem.operands, groups), problem.answer)


# -- rule-based rewards (Section 2.2.2) --------------------------------------------------------
def format_ok(text: str) -> bool:
    """The completion (up to its end-of-sequence token) is exactly the template."""
    return _FORMAT_RE.fullmatch(text) is not None


def answer_of(text: str) -> int | None:
    """The number inside the first `<answer>` tags, None where there is none."""
    m = _ANSWER_RE.search(text)
    return int(m.group(1)) if m else None


def accuracy_reward(problem: Problem, text: str) -> float:
    return 1.0 if answer_of(text) == problem.answer else 0.0


def format_reward(text: str) -> float:
    return 1.0 if format_ok(text) else 0.0


def thinking_length(text: str) -> int:
    """Tokens between `<think>` and `</think>` (to the end where it is not closed; 0 without `<think>`)."""
    start = text.find(THINK)
    if start < 0:
        return 0
    body = text[start + len(THINK):]
    end = body.find(END_THINK)
    return len(encode(body if end < 0 else body[:end]))
