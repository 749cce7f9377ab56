"""What the mini tier measures of a (target, draft) pair, at batch size 1 with KV caches, in one
process and interleaved, so that the machine's load weighs on both sides alike:

- per prompt and mode (greedy; sampled at temperature 1): the target decoding alone (timed before
  and after the speculative runs, the mean kept), then speculative decoding at every gamma: wall
  time, target passes, tokens those passes emitted, and (greedy) whether the output is the
  target's own;
- beta = sum_x min(p(x), q(x)) (Definition 3.1) at every position the target generated alone, from
  a full forward pass of each model over the sequence (no cache): alpha is its mean;
- the cost of a draft step, a target step and a target pass over gamma + 1 tokens, with caches
  filled to the middle of the generation (the median of repeats);
- for the distribution test: at a few fixed prefixes, the first token of many independent
  speculative iterations (temperature 1), the same number of tokens drawn from the draft's q alone
  (the control, which is not the target's distribution), and the target's p there.

`Measurements` holds the raw values; the `speculative_decoding` evaluator (evals/evaluators/)
turns them into the metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from reproductions.speculative.speculative import (Decoder, autoregressive_generate, beta, probabilities,
                                                   speculative_generate)

MODES = {"greedy": 0.0, "sampled": 1.0}


@dataclass
class Measurements:
    """The raw measurements (`SpeculativeMeasurements` of evals/contract.py)."""

    gammas: list[int] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    passes: dict[str, list[int]] = field(default_factory=dict)
    emitted: dict[str, list[int]] = field(default_factory=dict)
    identical: dict[str, list[bool]] = field(default_factory=dict)
    beta: dict[str, list[float]] = field(default_factory=dict)
    draws: list[dict[str, list[float]]] = field(default_factory=list)
    measurement: str = ""


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = seed * 1_000_003 + k
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def full_forward_probs(decoder: Decoder, tokens: list[int], temperature: float) -> torch.Tensor:
    """Next-token probabilities after every prefix of `tokens`, from one pass without a cache."""
    decoder.reset()
    probs = probabilities(decoder.extend(torch.tensor(tokens, dtype=torch.long)), temperature)
    decoder.reset()
    return probs


def step_costs(target: Decoder, draft: Decoder, context: list[int], gammas: list[int], repeats: int) -> dict[str, float]:
    """Median seconds of a draft step, a target step and a target pass over gamma + 1 tokens, with
    each cache holding `context` (the cache is cut back after every timed call)."""
    times: dict[str, list[float]] = {}
    for model in (target, draft):
        model.reset()
        model.extend(torch.tensor(context, dtype=torch.long))
    n = len(context)
    tok = torch.tensor(context[-1:], dtype=torch.long)
    calls = {"target_step": (target, tok), "draft_step": (draft, tok)}
    calls |= {f"verify_g{g}": (target, torch.tensor(context[-(g + 1):], dtype=torch.long)) for g in gammas}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for name, (model, feed) in calls.items():
            _, dt = _timed(lambda: model.extend(feed))
            model.truncate(n)
            times.setdefault(name, []).append(dt)
    return {name: float(torch.tensor(ts[1:]).median()) for name, ts in times.items()}


def measure(target: Decoder, draft: Decoder, prompts: list, draw_prefixes: list, *, gammas: list[int],
            new_tokens: int, draws: int, draw_gamma: int, cost_repeats: int, seed: int, progress=lambda: None,
            prepare: Callable[[Any], list[int]] = list, eos: int | None = None) -> Measurements:
    """The measurements of the module docstring. `prepare(item)` readies both decoders for a prompt
    or prefix item and returns the token prompt (an encoder-decoder pair: sets the source sentence,
    returns the decoder's start token); generation stops at `eos` where one is given."""
    m = Measurements(gammas=list(gammas))
    m.measurement = (f"batch 1, KV caches, {torch.get_num_threads()} CPU thread(s); {len(prompts)} prompts of "
                     f"{len(prompts[0])} tokens, {new_tokens} new tokens; per prompt and mode the target alone is "
                     f"timed before and after the speculative runs (mean kept); costs: median of {cost_repeats} "
                     f"calls at the middle of the generation; {draws} draws at each of {len(draw_prefixes)} prefixes")
    first = prepare(prompts[0])
    autoregressive_generate(target, first, 8)  # warm-up
    speculative_generate(target, draft, first, 8, gammas[0])
    for i, item in enumerate(prompts):
        prompt = prepare(item)
        for mode, temp in MODES.items():
            alone, t0 = _timed(lambda: autoregressive_generate(target, prompt, new_tokens, temp, _generator(seed, i, 0),
                                                               eos))
            runs = {}
            for g in gammas:
                runs[g], dt = _timed(lambda: speculative_generate(target, draft, prompt, new_tokens, g, temp,
                                                                  _generator(seed, i, g), eos))
                m.seconds.setdefault(f"speculative_{mode}_g{g}", []).append(dt)
            _, t1 = _timed(lambda: autoregressive_generate(target, prompt, new_tokens, temp, _generator(seed, i, 0), eos))
            m.seconds.setdefault(f"target_{mode}", []).append((t0 + t1) / 2)
            for g, run in runs.items():
                m.passes.setdefault(f"{mode}_g{g}", []).append(len(run.per_iteration))
                m.emitted.setdefault(f"{mode}_g{g}", []).append(sum(run.per_iteration))
                if mode == "greedy":
                    m.identical.setdefault(f"greedy_g{g}", []).append(run.tokens == alone.tokens)
            # beta at the positions the target generated alone (Definition 3.1)
            seq = prompt + alone.tokens
            p = full_forward_probs(target, seq[:-1], temp)[len(prompt) - 1:]
            q = full_forward_probs(draft, seq[:-1], temp)[len(prompt) - 1:]
            m.beta.setdefault(mode, []).extend(beta(p, q).tolist())
            if mode == "greedy":
                costs = step_costs(target, draft, seq[: len(prompt) + len(alone.tokens) // 2], gammas, cost_repeats)
                for name, s in costs.items():
                    m.seconds.setdefault(name, []).append(s)
        progress()
    for j, item in enumerate(draw_prefixes):
        prefix = prepare(item)
        p = full_forward_probs(target, prefix, 1.0)[-1].cpu()
        q = full_forward_probs(draft, prefix, 1.0)[-1].cpu()
        gen = _generator(seed, 10_000 + j)
        spec = torch.zeros_like(p)
        for _ in range(draws):
            first = speculative_generate(target, draft, prefix, 1, draw_gamma, 1.0, gen).tokens[0]
            spec[first] += 1
        control = torch.bincount(torch.multinomial(q, draws, replacement=True, generator=gen), minlength=len(q))
        m.draws.append({"p": p.tolist(), "speculative": spec.tolist(), "draft": control.to(torch.float64).tolist()})
        progress()
    return m
