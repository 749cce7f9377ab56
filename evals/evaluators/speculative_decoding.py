"""Speculative decoding against the target model decoding alone (Leviathan et al. 2022), from an
agent's `SpeculativeMeasurements` (evals/contract.py), both at batch size 1 with KV caches.

Reports, for every gamma the agent measured and each mode (greedy; sampled at temperature 1):
- `speedup_<mode>_g<gamma>`: the target alone's total wall time over speculative decoding's, on the
  same prompts, measured interleaved;
- `alpha_<mode>`: the mean of beta = sum_x min(p(x), q(x)) over the positions the target generated
  (Definition 3.1, Corollary 3.6);
- `tokens_per_pass_<mode>_g<gamma>`: tokens emitted per target pass, measured; beside it equation
  (1)'s (1 - alpha^(gamma+1)) / (1 - alpha) with the measured alpha (`..._formula_...`) and the
  relative difference |measured / formula - 1| (`tokens_per_pass_rel_error_...`);
- `draft_cost_c`: a draft step's cost over a target step's (the paper's c); `verify_cost_g<gamma>`:
  a target pass over gamma + 1 tokens over one step (the paper assumes 1);
- `speedup_formula_<mode>_g<gamma>`: Theorem 3.8, (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1)),
  as the paper states it; `speedup_corrected_...`: the same with gamma c + v, v the measured
  verification cost; `speedup_rel_error_...`: |measured / corrected - 1|;
- `greedy_identical`: the share of (prompt, gamma) whose greedy output is the target's own;
- `chi2_pvalue`: a chi-square test that the first tokens speculative decoding drew at fixed
  prefixes follow the target's p (bins of expected count below `min_expected` pooled, the
  prefixes' statistics and degrees of freedom summed); `chi2_pvalue_draft`: the same test on
  draws from the draft alone, the control that shows the test can reject.

Every metric recomputes from the samples (`derive`): per-prompt seconds, passes, emitted tokens
and identity flags, the betas, the step costs, and the binned observed and expected counts of the
draws.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import SpeculativeMeasurements, capability
from evals.evaluators import Measured, register
from evals.record import EvalResult

MODES = ("greedy", "sampled")


class SpeculativeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_expected: float = Field(5.0, gt=0)    # chi-square bins: expected counts below this are pooled


def expected_tokens(alpha: float, gamma: int) -> float:
    """Equation (1) of the paper."""
    return float(gamma + 1) if alpha >= 1.0 else (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X chi-square with `dof` degrees of freedom: Q(dof/2, statistic/2)."""
    if dof <= 0:
        return 1.0
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(statistic / 2, dtype=torch.float64)))


def bins(p: list[float], n: int, min_expected: float) -> list[list[int]]:
    """Tokens grouped into bins of expected count n * p >= min_expected: the likeliest tokens alone,
    the rest pooled (the pool joined to the smallest single bin when it is itself too small)."""
    order = sorted(range(len(p)), key=lambda t: -p[t])
    single = [[t] for t in order if n * p[t] >= min_expected]
    rest = [t for t in order if n * p[t] < min_expected]
    if rest:
        if n * sum(p[t] for t in rest) >= min_expected or not single:
            single.append(rest)
        else:
            single[-1] += rest
    return single


def binned(draw: dict[str, list[float]], which: str, min_expected: float) -> tuple[list[float], list[float]]:
    p, counts = draw["p"], draw[which]
    n = sum(counts)
    groups = bins(p, int(round(n)), min_expected)
    return [sum(counts[t] for t in g) for g in groups], [n * sum(p[t] for t in g) for g in groups]


def chi2_pooled(observed: list[float], expected: list[float], n_bins: list[int]) -> tuple[float, int]:
    """Pearson's statistic summed over the prefixes, and its degrees of freedom (bins - 1 each)."""
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return stat, sum(k - 1 for k in n_bins)


def _mean(xs) -> float:
    return sum(xs) / len(xs)


def summarise(samples: dict[str, list[float]], protocol: dict) -> dict[str, float]:
    gammas = protocol["gammas"]
    target_step = _mean(samples["time_target_step"])
    c = _mean(samples["time_draft_step"]) / target_step
    metrics = {"draft_cost_c": c,
               "greedy_identical": _mean([x for g in gammas for x in samples[f"identical_greedy_g{g}"]])}
    for g in gammas:
        metrics[f"verify_cost_g{g}"] = _mean(samples[f"time_verify_g{g}"]) / target_step
    for mode in MODES:
        alpha = _mean(samples[f"beta_{mode}"])
        metrics[f"alpha_{mode}"] = alpha
        for g in gammas:
            measured = sum(samples[f"emitted_{mode}_g{g}"]) / sum(samples[f"passes_{mode}_g{g}"])
            formula = expected_tokens(alpha, g)
            speedup = sum(samples[f"time_target_{mode}"]) / sum(samples[f"time_speculative_{mode}_g{g}"])
            paper = formula / (g * c + 1.0)
            corrected = formula / (g * c + metrics[f"verify_cost_g{g}"])
            metrics |= {f"tokens_per_pass_{mode}_g{g}": measured, f"tokens_per_pass_formula_{mode}_g{g}": formula,
                        f"tokens_per_pass_rel_error_{mode}_g{g}": abs(measured / formula - 1.0),
                        f"speedup_{mode}_g{g}": speedup, f"speedup_formula_{mode}_g{g}": paper,
                        f"speedup_corrected_{mode}_g{g}": corrected,
                        f"speedup_rel_error_{mode}_g{g}": abs(speedup / corrected - 1.0)}
    for which, name in (("speculative", "chi2_pvalue"), ("draft", "chi2_pvalue_draft")):
        stat, dof = chi2_pooled(samples[f"draws_observed_{which}"], samples[f"draws_expected_{which}"],
                                protocol[f"draw_bins_{which}"])
        metrics[name] = chi2_sf(stat, dof)
    return metrics


def derive(result: EvalResult) -> dict[str, float]:
    return summarise(result.samples, result.protocol)


def metric_names(o: SpeculativeOptions) -> list[str]:
    return ["draft_cost_c", "greedy_identical", "verify_cost_g*", "alpha_*", "tokens_per_pass_*", "speedup_*",
            "chi2_pvalue", "chi2_pvalue_draft"]


@register("speculative_decoding", version=1, options=SpeculativeOptions, derive=derive, metric_names=metric_names)
def speculative_decoding(agent, config, options: SpeculativeOptions) -> Measured:
    m = capability(agent, SpeculativeMeasurements, "speculative_decoding")
    samples: dict[str, list[float]] = {f"time_{k}": list(map(float, v)) for k, v in m.seconds.items()}
    samples |= {f"passes_{k}": list(map(float, v)) for k, v in m.passes.items()}
    samples |= {f"emitted_{k}": list(map(float, v)) for k, v in m.emitted.items()}
    samples |= {f"identical_{k}": [float(x) for x in v] for k, v in m.identical.items()}
    samples |= {f"beta_{k}": list(map(float, v)) for k, v in m.beta.items()}
    protocol = {"gammas": list(m.gammas), "modes": list(MODES), "min_expected": options.min_expected,
                "draw_prefixes": len(m.draws), "draws_per_prefix": [int(sum(d["speculative"])) for d in m.draws],
                "measurement": m.measurement}
    for which in ("speculative", "draft"):
        observed, expected, n_bins = [], [], []
        for d in m.draws:
            o, e = binned(d, which, options.min_expected)
            observed += o
            expected += e
            n_bins.append(len(o))
        samples[f"draws_observed_{which}"], samples[f"draws_expected_{which}"] = observed, expected
        protocol[f"draw_bins_{which}"] = n_bins
    return Measured(metrics=summarise(samples, protocol), samples=samples, protocol=protocol)
