"""Statistics over seeds and the target tests (CONTRIBUTING.md, 'Adding a paper': targets).

Resampling is over seeds, never over evaluation episodes. The bootstrap uses a fixed generator so
the same records always give the same interval, and anyone can recompute it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from evals.spec import Target, Term

N_BOOTSTRAP = 10_000
CONFIDENCE = 0.95
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def bootstrap_ci(values, confidence: float = CONFIDENCE, n_boot: int = N_BOOTSTRAP) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    x = np.asarray(values, dtype=float)
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(0)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarize(values) -> Summary:
    x = np.asarray(values, dtype=float)
    lo, hi = bootstrap_ci(x)
    return Summary(int(x.size), float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0, lo, hi)


@dataclass(frozen=True)
class TargetResult:
    expr: str
    test: str
    met: bool
    detail: str
    seeds: int


def term_values(term: Term, values: dict[tuple[str, str], dict[int, float]], seeds: list[int]) -> np.ndarray:
    """A target side's value at each of `seeds` (a difference of two metrics taken seed by seed)."""
    if term.const is not None:
        return np.full(len(seeds), term.const)
    per_seed = values[(term.metric, term.arm)]
    side = term.scale * np.array([per_seed[s] for s in seeds])
    if term.minus_arm is not None:  # a difference of two metrics, seed by seed
        side = side - np.array([values[(term.minus_metric, term.minus_arm)][s] for s in seeds])
    return side


def check_target(target: Target, values: dict[tuple[str, str], dict[int, float]], required_seeds: int) -> TargetResult:
    """`values[(metric, arm)][seed]` holds each ok run's metric. Seeds count only where every arm
    the target names has an ok run (pairs across arms share the seed)."""
    lhs, op, rhs = target.parsed
    reads = list(dict.fromkeys(lhs.reads() + rhs.reads()))
    missing = [f"{metric}[{arm}]" for metric, arm in reads if (metric, arm) not in values]
    if missing:
        return TargetResult(target.expr, target.test, False, f"no ok runs report {', '.join(missing)}", 0)
    seeds = sorted(set.intersection(*(set(values[key]) for key in reads)))
    if len(seeds) < required_seeds:
        return TargetResult(target.expr, target.test, False,
                            f"{len(seeds)} ok seed(s), the spec needs {required_seeds}", len(seeds))
    a, b = term_values(lhs, values, seeds), term_values(rhs, values, seeds)
    diff = a - b  # the condition is `diff OP 0`
    cmp = OPS[op]
    if target.test == "all_seeds":
        met = bool(all(cmp(d, 0) for d in diff))
        detail = "per seed: " + ", ".join(f"{x:.4g}" for x in a)
    elif target.test == "mean":
        met = bool(cmp(diff.mean(), 0))
        detail = f"mean {a.mean():.4g} vs {b.mean():.4g}"
    else:
        lo, hi = bootstrap_ci(diff)
        # The whole interval must lie on the passing side.
        met = bool(cmp(lo, 0) and cmp(hi, 0))
        what = "difference" if rhs.const is None else "mean"
        shift = 0.0 if rhs.const is None else rhs.const
        detail = f"{what} {diff.mean() + shift:.4g}, 95% CI [{lo + shift:.4g}, {hi + shift:.4g}]"
    return TargetResult(target.expr, target.test, met, detail, len(seeds))
