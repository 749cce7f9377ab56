"""Budget forcing (s1, arXiv 2501.19393, Section 3.1): control how long a model thinks at decode
time, for any model that returns next-token logits (the project's GPT; the tests' scripted toy).

The paper's two rules, on a completion that opens with the start-of-thinking delimiter (forced,
as the paper's template puts it in the prompt):
- maximum: "we enforce a maximum token count by simply appending the end-of-thinking token
  delimiter and optionally 'Final Answer:' to early exit the thinking stage" -> when the thinking
  holds `max_thinking` tokens, `</think><answer>` is forced (`<answer>` is this task's "Final
  Answer:") and the model writes the answer;
- minimum / extension: "we suppress the generation of the end-of-thinking token delimiter and
  optionally append the string 'Wait' to the model's current reasoning trace" -> the first
  `extensions` times the model picks `</think>`, it is not emitted: with an empty `continuation`
  the token is drawn again from the model's distribution without `</think>` (suppression alone),
  otherwise the `continuation` tokens (the paper's "Wait") are appended in its place.
The thinking tokens counted against the cap are those between the delimiters, appended
continuations included, so a capped completion never holds more (the paper's Control, eq. 1 of
Section 3.2, is 100% by construction; the evaluator measures it).

One batched loop with the model's key/value cache; each sequence keeps its own state (phase,
thinking count, suppressions left, a queue of forced tokens). The tests check it against a
per-sequence loop without a cache written the paper's way (generate until the delimiter or the
cap, then append and continue) and on a hand-built model whose outputs are known.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evals.tasks import arithmetic
from reproductions.r1.grpo import pick

PHASE_OPEN, PHASE_THINK, PHASE_ANSWER = 0, 1, 2


@dataclass(frozen=True)
class Delimiters:
    """The token ids budget forcing acts on: `opening` starts every completion (the thinking's
    opening), `end` is the token whose generation ends the thinking, `at_cap` is forced when the
    cap is reached (the end of thinking, then "Final Answer:"), `stop` ends a completion, `pad`
    fills a finished one. The default is R1's arithmetic task (evals/tasks/arithmetic.py)."""

    opening: tuple[int, ...] = (arithmetic.TOKEN_ID[arithmetic.THINK],)
    end: int = arithmetic.TOKEN_ID[arithmetic.END_THINK]
    at_cap: tuple[int, ...] = (arithmetic.TOKEN_ID[arithmetic.END_THINK], arithmetic.TOKEN_ID[arithmetic.ANSWER])
    stop: tuple[int, ...] = (arithmetic.EOS_ID,)
    pad: int = arithmetic.PAD_ID

    def __post_init__(self):
        if not self.at_cap or self.at_cap[0] != self.end:
            raise ValueError(f"budget forcing: at_cap {self.at_cap} must open with the end-of-thinking token {self.end}")


ARITHMETIC = Delimiters()


@torch.no_grad()
def forced_sample(model, prompts: torch.Tensor, max_new_tokens: int, temperature: float, top_p: float,
                  generator: torch.Generator, max_thinking: int | None = None, extensions: int = 0,
                  continuation: list[int] | tuple[int, ...] = (), delimiters: Delimiters = ARITHMETIC) -> torch.Tensor:
    """Completions (n, <= max_new_tokens) of left-padded prompts (n, P) under budget forcing.

    `model(feed, caches=caches)[0]` gives logits (n, t, vocab) and keeps its cache in `caches`;
    `pick` (R1's sampler: argmax at temperature 0, else nucleus sampling) draws each token from
    `generator`. A completion is padded after its stop token; the cap counts the thinking tokens
    after the opening, up to the end of thinking."""
    d = delimiters
    if max_thinking is not None and max_thinking < 0:
        raise ValueError(f"budget forcing: max_thinking must be >= 0, got {max_thinking}")
    if extensions < 0:
        raise ValueError(f"budget forcing: extensions must be >= 0, got {extensions}")
    if d.end in continuation:
        raise ValueError("budget forcing: the continuation cannot hold the end-of-thinking delimiter")
    n, device = prompts.size(0), prompts.device
    caches = [{} for _ in getattr(model, "blocks", [None])]
    queues: list[list[int]] = [list(d.opening) for _ in range(n)]   # the template opens the thinking
    phase = [PHASE_OPEN] * n     # until the opening <think> is emitted
    thinking = [0] * n           # tokens between the delimiters so far
    left = [extensions] * n      # suppressions of </think> left
    done = torch.zeros(n, dtype=torch.bool)
    feed, out = prompts, []
    for _ in range(max_new_tokens):
        logits = model(feed, caches=caches)[0][:, -1, :]
        # the model's own choice, and the choice it would make without </think> (suppression)
        chosen = pick(logits, temperature, top_p, generator).cpu().tolist()
        wants_end = [i for i in range(n) if not queues[i] and phase[i] == PHASE_THINK and left[i] > 0
                     and chosen[i] == d.end and not (max_thinking is not None and thinking[i] >= max_thinking)]
        redrawn = {}
        if wants_end and not continuation:
            masked = logits.clone()
            masked[:, d.end] = float("-inf")
            again = pick(masked, temperature, top_p, generator).cpu().tolist()
            redrawn = {i: again[i] for i in wants_end}
        nxt = []
        for i in range(n):
            if done[i]:
                nxt.append(d.pad)
                continue
            if queues[i]:                                   # a forced token
                tok = queues[i].pop(0)
            elif phase[i] == PHASE_THINK and max_thinking is not None and thinking[i] >= max_thinking:
                tok, queues[i] = d.at_cap[0], list(d.at_cap[1:])   # the cap: end the thinking, ask for the answer
            elif i in redrawn:                              # suppressed, drawn again without </think>
                left[i] -= 1
                tok = redrawn[i]
            elif i in wants_end:                            # suppressed, "Wait" appended instead
                left[i] -= 1
                tok, queues[i] = continuation[0], list(continuation[1:])
            else:
                tok = chosen[i]
            if phase[i] == PHASE_THINK and tok != d.end:   # as arithmetic.thinking_length counts
                thinking[i] += 1
                if max_thinking is not None and thinking[i] >= max_thinking and queues[i]:
                    queues[i] = []                          # a continuation cut by the cap
            if phase[i] == PHASE_OPEN and not queues[i]:     # the opening emitted
                phase[i] = PHASE_THINK
            elif tok == d.end and phase[i] == PHASE_THINK:
                phase[i] = PHASE_ANSWER
            if tok in d.stop:
                done[i] = True
            nxt.append(tok)
        step = torch.tensor(nxt, dtype=torch.long)
        out.append(step)
        if bool(done.all()):
            break
        feed = step[:, None].to(device)
    return torch.stack(out, dim=1)
