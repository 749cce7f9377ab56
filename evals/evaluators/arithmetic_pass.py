"""Pass@1 on held-out generated arithmetic (`evals.tasks.arithmetic`), as DeepSeek-R1 (arXiv
2501.12948) scores its models: k responses sampled per problem at temperature 0.6 with top-p
0.95, pass@1 = the mean correctness over the k responses and the problems (Section 3, "Evaluation
Setup"); beside it greedy decoding, the share of completions in the template, and the length of
the thinking. An agent with a starting point (the checkpoint its RL began from) has that model
scored the same way, on the same problems and the same random draws, under `start_`.

Protocol: `n` problems drawn with the run's task settings (`min_operands`, `max_operands`,
`max_operand` of its config) from a generator seeded with `heldout_seed` (never the run's seed);
the correctness is the task's accuracy rule (the number in the first `<answer>` tags equals the
sum). Samples are per problem, so every metric but one is the mean of its samples:
- `pass1`: the problem's share of correct sampled responses; `pass1_greedy`: 1 if the greedy
  response is correct; `format_rate`: the share of sampled responses exactly in the template;
  `think_length`: the mean number of thinking tokens of its sampled responses;
- `start_*`: the same for the starting point; `pass1_gain`: `pass1 - start_pass1` per problem;
- `think_length_ratio` = mean `think_length` / mean `start_think_length` (recomputed by `derive`).

An agent whose config has no arithmetic task settings is not scored, and the result says so.
"""

from __future__ import annotations

import statistics

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import Reasoner, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks import arithmetic

TASK_FIELDS = ("min_operands", "max_operands", "max_operand")
PER_MODEL = ("pass1", "pass1_greedy", "format_rate", "think_length")


class ArithmeticPassOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(500, ge=1)                  # held-out problems
    samples: int = Field(4, ge=1)              # k responses sampled per problem
    temperature: float = Field(0.6, gt=0)      # the paper's sampling for pass@1
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(512, ge=1)
    heldout_seed: int = 20250122


def _names(o: ArithmeticPassOptions) -> list[str]:
    return [*PER_MODEL, *(f"start_{m}" for m in PER_MODEL), "pass1_gain", "think_length_ratio"]


def _batched(model, prompts: list[str], temperature: float, top_p: float, generator: torch.Generator,
             options: ArithmeticPassOptions) -> list[str]:
    out = []
    for start in range(0, len(prompts), options.batch_size):
        out += model.complete(prompts[start:start + options.batch_size], temperature, top_p, generator,
                              options.max_new_tokens)
    return out


def score(model, problems: list[arithmetic.Problem], options: ArithmeticPassOptions) -> dict[str, list[float]]:
    """Per-problem values of one model: k sampled responses (problem-major) and one greedy."""
    k = options.samples
    prompts = [p.prompt for p in problems for _ in range(k)]
    sampled = _batched(model, prompts, options.temperature, options.top_p,
                       torch.Generator().manual_seed(options.heldout_seed), options)
    greedy = _batched(model, [p.prompt for p in problems], 0.0, 1.0, torch.Generator().manual_seed(0), options)
    per = {name: [] for name in PER_MODEL}
    for i, p in enumerate(problems):
        mine = sampled[i * k:(i + 1) * k]
        per["pass1"].append(sum(arithmetic.accuracy_reward(p, t) for t in mine) / k)
        per["pass1_greedy"].append(arithmetic.accuracy_reward(p, greedy[i]))
        per["format_rate"].append(sum(arithmetic.format_reward(t) for t in mine) / k)
        per["think_length"].append(sum(arithmetic.thinking_length(t) for t in mine) / k)
    return per


def derive(result: EvalResult) -> dict[str, float]:
    """The length ratio, where there is a starting point whose thinking is not empty."""
    s = result.samples
    if "start_think_length" not in s or statistics.fmean(s["start_think_length"]) == 0:
        return {}
    return {"think_length_ratio": statistics.fmean(s["think_length"]) / statistics.fmean(s["start_think_length"])}


def without_task(config) -> Measured | None:
    """Why a run is not scored, where its config has no arithmetic task (None where it has one)."""
    missing = [f for f in TASK_FIELDS if not hasattr(config, f)]
    if missing:
        return Measured(metrics={}, protocol={"not_scored": f"the run's config has no arithmetic task ({', '.join(missing)})"})
    return None


def task_settings(config) -> dict:
    """The run's arithmetic task settings, as its config gives them."""
    return {f: getattr(config, f) for f in TASK_FIELDS}


def held_out_problems(task: dict, n: int, seed: int) -> list:
    """n problems of the task, drawn with the held-out seed (never those it trained on)."""
    return arithmetic.sample_problems(n, torch.Generator().manual_seed(seed), **task)


def tiny(options: ArithmeticPassOptions) -> ArithmeticPassOptions:
    return shrunk(options, n=4, samples=2)


@register("arithmetic_pass", version=1, options=ArithmeticPassOptions, metric_names=_names, derive=derive, tiny=tiny)
def arithmetic_pass(agent, config, options: ArithmeticPassOptions) -> Measured:
    if (unscored := without_task(config)) is not None:
        return unscored
    model = capability(agent, Reasoner, "arithmetic_pass")
    task = task_settings(config)
    problems = held_out_problems(task, options.n, options.heldout_seed)
    samples = score(model, problems, options)
    start = model.starting_point()
    if start is not None:
        start_samples = score(capability(start, Reasoner, "arithmetic_pass"), problems, options)
        samples |= {f"start_{k}": v for k, v in start_samples.items()}
        samples["pass1_gain"] = [a - b for a, b in zip(samples["pass1"], samples["start_pass1"])]
    metrics = {name: statistics.fmean(xs) for name, xs in samples.items()}
    metrics |= derive(EvalResult(evaluator="arithmetic_pass", version=1, metrics={}, samples=samples))
    return Measured(metrics=metrics, samples=samples, protocol={
        **task, "n": options.n, "samples": options.samples, "temperature": options.temperature, "top_p": options.top_p,
        "max_new_tokens": options.max_new_tokens, "heldout_seed": options.heldout_seed,
        "scoring": "pass@1 = mean correctness of k sampled responses per problem (the paper's protocol); a sample is "
                   "one problem; start_* score the model training began from on the same problems and draws",
    })
