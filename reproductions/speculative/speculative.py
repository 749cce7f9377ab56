"""Fast Inference from Transformers via Speculative Decoding (Leviathan, Kalman, Matias; arXiv
2211.17192): the paper's contribution, from scratch, for any pair of decoders with a KV cache.

- Algorithm 1 (SpeculativeDecodingStep): the draft model M_q proposes gamma tokens one at a time;
  the target M_p scores the prefix and all gamma guesses in one parallel pass (gamma + 1
  positions); guess i is accepted when r_i ~ U(0, 1) falls below p_i(x) / q_i(x), i.e. with
  probability min(1, p(x) / q(x)) (Section 2.3); at the first rejection the token is resampled from
  p'(x) = norm(max(0, p(x) - q(x))), and when all gamma are accepted one more token is drawn from
  p_{gamma+1}. Every emitted token is distributed exactly as p (Appendix A.1).
- Greedy mode (argmax, "temperature 0"): Algorithm 1 with one-hot p and q, so a guess is accepted
  exactly when it is the target's argmax and the replacement is the target's argmax; the output
  is the target's own greedy output.
- KV-cache rollback: after a pass, each model's cache is cut back to the accepted prefix (the
  target keeps the keys of the accepted guesses, which it computed in the verification pass).
- Definition 3.1 / Corollary 3.6: beta = sum_x min(p(x), q(x)) is the acceptance probability at a
  prefix; alpha = E[beta] (in greedy mode beta = 1 when the argmaxes agree, else 0).
- Equation (1): the expected number of tokens per iteration, (1 - alpha^(gamma + 1)) / (1 - alpha).
- Theorem 3.8: the expected wall-time improvement, (1 - alpha^(gamma + 1)) / ((1 - alpha)(gamma c + 1)),
  c being the cost of a draft step relative to a target step. The paper assumes that the target
  scores gamma + 1 tokens in the time of one step; `walltime_speedup(..., verify_cost=v)` replaces
  that 1 by the measured cost v of the verification pass (relative to one step).

A decoder is anything with a `Decoder`'s three members: `extend(tokens)` feeds tokens past its
cache and returns their next-token logits, `truncate(n)` cuts the cache back to n tokens, and
`length`, the number of tokens in the cache (`reproductions/speculative/decoders.py` wraps the
project's GPT and Hugging Face models).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


class Decoder(Protocol):
    """An autoregressive model with a key/value cache, at batch size 1."""

    length: int  # tokens held in the cache

    def reset(self) -> None:
        """Empty the cache (a new sequence)."""

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed `tokens` (1-D, the tokens after the cache), append them to the cache, and return the
        next-token logits after each of them, shape (len(tokens), vocab)."""

    def truncate(self, length: int) -> None:
        """Cut the cache back to its first `length` tokens (the rollback)."""


def probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / temperature) in float64; at temperature 0, the one-hot of the argmax (the
    paper's argmax sampling, Section 2.2)."""
    if temperature == 0.0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).to(torch.float64)
    return torch.softmax(logits.to(torch.float64) / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token drawn from a probability vector."""
    return int(torch.multinomial(probs.cpu(), 1, generator=generator).item())  # the generator lives on the CPU


# -- Algorithm 1 -----------------------------------------------------------------------------------
def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """p'(x) = norm(max(0, p(x) - q(x))) (Section 2.3): where the target puts more mass than the draft."""
    r = (p - q).clamp_min(0.0)
    total = r.sum()
    if total <= 0:  # p == q: a rejection has probability 0, so this is never sampled
        return p
    return r / total


def verify(p: torch.Tensor, q: torch.Tensor, guesses: list[int], generator: torch.Generator | None,
           greedy: bool = False) -> tuple[int, int]:
    """Algorithm 1's acceptance: `p` (gamma + 1, vocab) are the target's distributions after the
    prefix and after each guess, `q` (gamma, vocab) the draft's for each guess. Returns (n, token):
    the first n guesses are accepted and `token` follows them, drawn from the residual
    norm(max(0, p_{n+1} - q_{n+1})) after a rejection, or from p_{gamma+1} when all were accepted.
    With one-hot p and q (argmax sampling) no random number is drawn: `verify_greedy` is this case."""
    gamma = len(guesses)
    n = gamma
    for i, x in enumerate(guesses):
        if greedy:
            accepted = bool(p[i, x] > 0)
        else:  # r_i ~ U(0, 1); reject when r_i > p_i(x) / q_i(x)
            r = torch.rand((), generator=generator, dtype=torch.float64)
            accepted = bool(r * q[i, x] < p[i, x])
        if not accepted:
            n = i
            break
    dist = residual(p[n], q[n]) if n < gamma else p[gamma]
    token = int(dist.argmax()) if greedy else sample(dist, generator)
    return n, token


def verify_greedy(target_argmax: list[int], guesses: list[int]) -> tuple[int, int]:
    """Algorithm 1 with one-hot p and q, without building them: guesses are accepted while they are
    the target's argmax, and the token after them is the target's argmax there."""
    n = next((i for i, (a, x) in enumerate(zip(target_argmax, guesses)) if a != x), len(guesses))
    return n, target_argmax[n]


@dataclass
class Generation:
    """Generated tokens (the prompt excluded) and what each iteration of the loop produced."""

    tokens: list[int]
    per_iteration: list[int] = field(default_factory=list)  # tokens emitted by each target pass


def _last_logits(model: Decoder, sequence: list[int], device) -> torch.Tensor:
    """Feed the tokens of `sequence` that are not yet in the model's cache; logits after the last."""
    feed = torch.tensor(sequence[model.length:], dtype=torch.long, device=device)
    return model.extend(feed)[-1]


def speculative_generate(target: Decoder, draft: Decoder, prompt: list[int], max_new_tokens: int, gamma: int,
                         temperature: float = 0.0, generator: torch.Generator | None = None,
                         eos: int | None = None, device="cpu") -> Generation:
    """Speculative decoding: iterations of Algorithm 1 until `max_new_tokens` tokens (or `eos`).
    The last iteration may emit more than needed; the output is cut to `max_new_tokens` but
    `per_iteration` keeps what each pass emitted (for tokens per iteration, equation (1))."""
    if gamma < 1:
        raise ValueError(f"gamma={gamma}: speculative decoding needs at least one guess")
    greedy = temperature == 0.0
    target.reset()
    draft.reset()
    seq = list(prompt)
    out = Generation(tokens=[])
    while len(out.tokens) < max_new_tokens:
        # the draft guesses gamma tokens, one at a time (its cache may lack the last one or two tokens)
        start = len(seq)
        q_rows, guesses = [], []
        logits = _last_logits(draft, seq, device)
        for i in range(gamma):
            if greedy:
                x = int(logits.argmax())
            else:
                q_rows.append(probabilities(logits, temperature))
                x = sample(q_rows[-1], generator)
            guesses.append(x)
            if i < gamma - 1:
                logits = draft.extend(torch.tensor([x], dtype=torch.long, device=device))[-1]
        # the target scores the prefix and the gamma guesses in one pass: gamma + 1 distributions
        feed = seq[target.length:] + guesses
        p_logits = target.extend(torch.tensor(feed, dtype=torch.long, device=device))[-(gamma + 1):]
        if greedy:
            n, token = verify_greedy(p_logits.argmax(-1).tolist(), guesses)
        else:
            n, token = verify(probabilities(p_logits, temperature), torch.stack(q_rows), guesses, generator)
        new = guesses[:n] + [token]
        seq += new
        out.tokens += new
        out.per_iteration.append(len(new))
        # rollback: keep the caches of the accepted prefix only (`token` is fed at the next pass)
        target.truncate(start + n)
        draft.truncate(min(draft.length, start + n))
        if eos is not None and eos in new:
            out.tokens = out.tokens[:len(out.tokens) - len(new) + new.index(eos) + 1]
            break
    out.tokens = out.tokens[:max_new_tokens]
    return out


def autoregressive_generate(model: Decoder, prompt: list[int], max_new_tokens: int, temperature: float = 0.0,
                            generator: torch.Generator | None = None, eos: int | None = None,
                            device="cpu") -> Generation:
    """The baseline: the model alone, one token per step, with its KV cache (the same `Decoder`)."""
    model.reset()
    seq = list(prompt)
    out = Generation(tokens=[])
    logits = _last_logits(model, seq, device)
    while True:
        x = int(logits.argmax()) if temperature == 0.0 else sample(probabilities(logits, temperature), generator)
        seq.append(x)
        out.tokens.append(x)
        out.per_iteration.append(1)
        if len(out.tokens) >= max_new_tokens or x == eos:
            return out
        logits = model.extend(torch.tensor([x], dtype=torch.long, device=device))[-1]


# -- the analysis of Section 3 ---------------------------------------------------------------------
def beta(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Definition 3.1 / Corollary 3.6: beta = sum_x min(p(x), q(x)), the probability that a guess
    drawn from q is accepted, per row."""
    return torch.minimum(p, q).sum(-1)


def expected_tokens(alpha: float, gamma: int) -> float:
    """Equation (1): E[tokens per iteration] = (1 - alpha^(gamma + 1)) / (1 - alpha)."""
    if alpha >= 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def walltime_speedup(alpha: float, gamma: int, c: float, verify_cost: float = 1.0) -> float:
    """Theorem 3.8: (1 - alpha^(gamma + 1)) / ((1 - alpha)(gamma c + 1)), with the target's pass over
    gamma + 1 tokens costing `verify_cost` target steps (the paper's 1 when it is left out)."""
    return expected_tokens(alpha, gamma) / (gamma * c + verify_cost)
