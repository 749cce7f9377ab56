"""Accuracy against a thinking budget under budget forcing (s1, arXiv 2501.19393), on held-out
generated arithmetic (`evals.tasks.arithmetic`).

Protocol: `n` problems drawn with the run's task settings (`min_operands`, `max_operands`,
`max_operand` of its config) from a generator seeded with `heldout_seed`; correctness is the
task's accuracy rule (the number in the first `<answer>` tags equals the sum); thinking length is
the number of tokens between `<think>` and `</think>`. The agent decodes under budget forcing
(`BudgetForcedReasoner.complete_forced`), every completion opening its thinking:

- the budget curve (s1's Figure 4 / Table 3 "budget forcing" row): for each cap c in `caps`, the
  thinking ended at c tokens and the answer forced (`</think><answer>`): `greedy_cap{c}` (greedy
  decoding) and, with `sampled_curve`, `sampled_cap{c}` (the mean of `samples` draws at `temperature`, `top_p`), with
  the thinking actually used `think_cap{c}` (greedy); without a cap `greedy_natural`,
  `sampled_natural`, `think_natural`;
- extension: the first e ends of thinking suppressed, the token drawn again without `</think>`
  (`sampled_ignore{e}`, e in `extensions`), or the continuation string appended in its place
  (the paper's "Wait": `sampled_wait{e}`, e in `waits`), with their thinking `think_ignore{e}`,
  `think_wait{e}` (sampled), and per-problem gains over `sampled_natural`: `ignore{e}_gain`,
  `wait{e}_gain`; greedily, `greedy_ignore1`, `greedy_wait1` and their gains;
- `within_budget`: the share of a problem's capped completions whose thinking is within the cap,
  the paper's Control (Section 3.2, eq. 1);
- derived from the curve (`derive`, recomputed from the samples): `cap_min_step`, the smallest
  rise of greedy accuracy from one cap to the next (>= 0: the curve never falls); the paper's
  Scaling (eq. 2), the mean slope (f(b) - f(a)) / (b - a) over pairs of caps whose mean thinking
  b > a (accuracy per thinking token), and Performance (eq. 3), the best accuracy on the curve.

Every metric but the derived three is the mean of its per-problem samples. An agent whose config
has no arithmetic task settings is not scored.
"""

from __future__ import annotations

import itertools
import statistics

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import BudgetForcedReasoner, capability
from evals.evaluators import Measured, register, shrunk
from evals.evaluators.arithmetic_pass import held_out_problems, task_settings, without_task
from evals.record import EvalResult
from evals.tasks import arithmetic



class BudgetForcingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(500, ge=1)                                   # held-out problems
    caps: list[int] = Field(default_factory=lambda: [0, 4, 8, 16, 24, 32, 48, 64], min_length=2)
    samples: int = Field(4, ge=1)                               # draws per problem for the sampled metrics
    sampled_curve: bool = False                                 # the sampled accuracy at every cap too
    temperature: float = Field(1.0, gt=0)                       # the model's own distribution
    top_p: float = Field(1.0, gt=0, le=1)
    extensions: list[int] = Field(default_factory=lambda: [1, 2, 4])   # ends of thinking suppressed
    waits: list[int] = Field(default_factory=lambda: [1, 2])           # ends replaced by the continuation
    max_new_tokens: int = Field(96, ge=1)
    batch_size: int = Field(500, ge=1)
    heldout_seed: int = 20250122


def _names(o: BudgetForcingOptions) -> list[str]:
    kinds = ("greedy", "sampled", "think") if o.sampled_curve else ("greedy", "think")
    names = [f"{kind}_cap{c}" for c in o.caps for kind in kinds]
    names += ["greedy_natural", "sampled_natural", "think_natural", "greedy_ignore1", "greedy_wait1",
              "greedy_ignore1_gain", "greedy_wait1_gain", "within_budget", "cap_min_step", "scaling", "performance"]
    for e in o.extensions:
        names += [f"sampled_ignore{e}", f"think_ignore{e}", f"ignore{e}_gain"]
    for e in o.waits:
        names += [f"sampled_wait{e}", f"think_wait{e}", f"wait{e}_gain"]
    return names


def _decode(model, prompts: list[str], greedy: bool, options: BudgetForcingOptions, seed: int, **forcing) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    temperature, top_p = (0.0, 1.0) if greedy else (options.temperature, options.top_p)
    out = []
    for start in range(0, len(prompts), options.batch_size):
        out += model.complete_forced(prompts[start:start + options.batch_size], temperature, top_p, generator,
                                     options.max_new_tokens, **forcing)
    return out


def _per_problem(problems, texts: list[str], k: int) -> tuple[list[float], list[float]]:
    """Each problem's mean correctness and mean thinking length over its k completions."""
    acc, think = [], []
    for i, p in enumerate(problems):
        mine = texts[i * k:(i + 1) * k]
        acc.append(sum(arithmetic.accuracy_reward(p, t) for t in mine) / k)
        think.append(sum(arithmetic.thinking_length(t) for t in mine) / k)
    return acc, think


def scaling(points: list[tuple[float, float]]) -> float:
    """Eq. (2) of Section 3.2: the mean of (f(b) - f(a)) / (b - a) over all pairs of points
    (thinking a, accuracy f(a)) with b > a."""
    slopes = [(fb - fa) / (b - a) for (a, fa), (b, fb) in itertools.combinations(sorted(points), 2) if b > a]
    return statistics.fmean(slopes) if slopes else 0.0


def derive(result: EvalResult) -> dict[str, float]:
    s, caps = result.samples, result.protocol["caps"]
    curve = [statistics.fmean(s[f"greedy_cap{c}"]) for c in caps]
    points = [(statistics.fmean(s[f"think_cap{c}"]), f) for c, f in zip(caps, curve)]
    return {"cap_min_step": min(b - a for a, b in zip(curve, curve[1:])), "scaling": scaling(points),
            "performance": max(curve)}


def tiny(options: BudgetForcingOptions) -> BudgetForcingOptions:
    return shrunk(options, n=4, samples=1)


@register("budget_forcing", version=1, options=BudgetForcingOptions, metric_names=_names, derive=derive, tiny=tiny)
def budget_forcing(agent, config, options: BudgetForcingOptions) -> Measured:
    if (unscored := without_task(config)) is not None:
        return unscored
    model = capability(agent, BudgetForcedReasoner, "budget_forcing")
    task = task_settings(config)
    problems = held_out_problems(task, options.n, options.heldout_seed)
    k = options.samples
    once = [p.prompt for p in problems]
    many = [p.prompt for p in problems for _ in range(k)]
    samples: dict[str, list[float]] = {}
    within = [[] for _ in problems]
    for c in options.caps:
        for kind, prompts, reps in (("greedy", once, 1), ("sampled", many, k))[:2 if options.sampled_curve else 1]:
            texts = _decode(model, prompts, kind == "greedy", options, seed=options.heldout_seed + c, max_thinking=c)
            acc, think = _per_problem(problems, texts, reps)
            samples[f"{kind}_cap{c}"] = acc
            if kind == "greedy":
                samples[f"think_cap{c}"] = think
            for i, t in enumerate(texts):
                within[i // reps].append(float(arithmetic.thinking_length(t) <= c))
    samples["within_budget"] = [statistics.fmean(w) for w in within]
    samples["greedy_natural"], _ = _per_problem(problems, _decode(model, once, True, options, 0), 1)
    natural, samples["think_natural"] = _per_problem(problems, _decode(model, many, False, options, 1), k)
    samples["sampled_natural"] = natural
    for name, wait, values in (("ignore", False, options.extensions), ("wait", True, options.waits)):
        for e in values:
            acc, think = _per_problem(problems, _decode(model, many, False, options, 1, extensions=e, wait=wait), k)
            samples[f"sampled_{name}{e}"], samples[f"think_{name}{e}"] = acc, think
            samples[f"{name}{e}_gain"] = [a - b for a, b in zip(acc, natural)]
        acc, _ = _per_problem(problems, _decode(model, once, True, options, 0, extensions=1, wait=wait), 1)
        samples[f"greedy_{name}1"] = acc
        samples[f"greedy_{name}1_gain"] = [a - b for a, b in zip(acc, samples["greedy_natural"])]
    metrics = {name: statistics.fmean(xs) for name, xs in samples.items()}
    protocol = {**task, "n": options.n, "caps": list(options.caps), "samples": k, "sampled_curve": options.sampled_curve, "temperature": options.temperature,
                "top_p": options.top_p, "extensions": list(options.extensions), "waits": list(options.waits),
                "max_new_tokens": options.max_new_tokens, "heldout_seed": options.heldout_seed,
                "scoring": "a sample is one problem: its accuracy (mean over its draws) under each forcing; the cap "
                           "forces </think><answer> after c thinking tokens; ignore{e}: the first e ends of thinking "
                           "suppressed and redrawn; wait{e}: replaced by the continuation string"}
    metrics |= derive(EvalResult(evaluator="budget_forcing", version=1, metrics={}, samples=samples, protocol=protocol))
    return Measured(metrics=metrics, samples=samples, protocol=protocol)
