"""Return of a policy learnt from offline data, as a D4RL normalised score, and how closely a
return-conditioned policy's achieved return follows the return it is asked for (the Decision
Transformer's Figure 4).

Protocol: whole episodes on the reset seeds `seed_base + i` (disjoint from training's and
rl_return's), the policy given the previous step's reward at each step (a Decision Transformer
decrements its return-to-go by it).
- `return`, `normalized_score`, `episode_length`: `episodes` episodes conditioned on the target
  whose normalised score is `target_score` (the option, else the run config's `target_return` as a
  raw return or its `target_score`: 100 is the expert reference's return; the paper conditions
  each task on one fixed return); the score is
  D4RL's 100 (R - R_random) / (R_expert - R_random) with the agent's own `reference_returns`.
- with `sweep_scores` (conditioned agents only): the same `episodes` reset seeds at each target
  score x, `achieved_score_t{x}` their mean normalised score (the curve of the paper's Figure 4),
  `target_corr` the Pearson correlation of the target scores and those means, and `target_slope`
  the least-squares slope of the means on the targets (a correlation is blind to scale: a flat
  curve with a tiny rise correlates as well as the diagonal); `derive` recomputes all three from
  the per-episode samples. Every sample list holds one value per episode seed.
The agent's `data_provenance` (which agent made the data, its steps, its sha256) is copied into
the protocol.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import ReturnConditionedActor, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks.envs import make_env


class ConditionedReturnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    episodes: int = Field(10, ge=1)
    target_score: float | None = None  # None: the run's config's `target_score` (100 if it has none)
    sweep_scores: list[float] = Field(default_factory=list)
    seed_base: int = 4_000_000
    max_episode_steps: int | None = Field(None, ge=1)  # None: the env's own time limit (a dry run's budget sets it)


def tiny(options: ConditionedReturnOptions) -> ConditionedReturnOptions:
    """A dry run's budget: one episode (and one per swept target) of at most 20 steps."""
    return shrunk(options, episodes=1, max_episode_steps=20)


def _x(score: float) -> str:
    return f"{score:g}"


def _names(o: ConditionedReturnOptions) -> list[str]:
    names = ["return", "normalized_score", "episode_length"]
    if o.sweep_scores:
        names += ["target_corr", "target_slope"] + [f"achieved_score_t{_x(s)}" for s in o.sweep_scores]
    return names


def pearson(x: list[float], y: list[float]) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else 0.0


def slope(x: list[float], y: list[float]) -> float:
    """The least-squares slope of y on x."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx = x - x.mean()
    return float((dx * (y - y.mean())).sum() / (dx * dx).sum())


def derive(result: EvalResult) -> dict[str, float]:
    s = result.samples
    swept = sorted((float(k[len("achieved_score_t"):]), k) for k in s if k.startswith("achieved_score_t"))
    if len(swept) < 2:
        return {}
    targets = [t for t, _ in swept]
    means = [float(np.mean(s[k])) for _, k in swept]
    return {k: m for (_, k), m in zip(swept, means)} | {"target_corr": pearson(targets, means),
                                                          "target_slope": slope(targets, means)}


def _episode(env: gym.Env, policy, seed: int) -> tuple[float, int]:
    obs, _ = env.reset(seed=seed)
    total, steps, last, done = 0.0, 0, None, False
    while not done:
        obs, r, terminated, truncated, _ = env.step(policy(obs, last))
        last = float(r)
        total += last
        steps += 1
        done = terminated or truncated
    return total, steps


@register("conditioned_return", version=2, options=ConditionedReturnOptions, metric_names=_names, derive=derive,
          tiny=tiny)
def conditioned_return(agent, config, options: ConditionedReturnOptions) -> Measured:
    actor = capability(agent, ReturnConditionedActor, "conditioned_return")
    refs = actor.reference_returns
    lo, hi = float(refs["random"]), float(refs["expert"])
    if hi == lo:
        raise ValueError(f"conditioned_return: the reference returns are equal ({lo}): no score")
    score = lambda r: 100.0 * (r - lo) / (hi - lo)  # noqa: E731
    target = lambda s: lo + s / 100.0 * (hi - lo)  # noqa: E731
    if options.target_score is not None:
        goal = options.target_score
    elif getattr(config, "target_return", None) is not None:  # a raw return (the paper's per-task targets)
        goal = score(float(config.target_return))
    else:
        goal = float(getattr(config, "target_score", 100.0))
    env = make_env(config.env_id, **({"max_episode_steps": options.max_episode_steps} if options.max_episode_steps else {}))
    seeds = [options.seed_base + i for i in range(options.episodes)]
    returns, lengths = [], []
    sweep: dict[float, list[float]] = {}
    try:
        for seed in seeds:
            r, n = _episode(env, actor.begin_episode(target(goal)), seed)
            returns.append(r)
            lengths.append(float(n))
        if options.sweep_scores and actor.conditioned:
            for x in options.sweep_scores:
                sweep[x] = [score(_episode(env, actor.begin_episode(target(x)), seed)[0]) for seed in seeds]
    finally:
        env.close()
    scores = [score(r) for r in returns]
    metrics = {"return": float(np.mean(returns)), "normalized_score": float(np.mean(scores)),
               "episode_length": float(np.mean(lengths))}
    samples = {"return": returns, "normalized_score": scores, "episode_length": lengths}
    protocol = {
        "env_id": config.env_id, "gymnasium": gym.__version__, "episodes": options.episodes,
        "reset_seeds": f"{seeds[0]}..{seeds[-1]}", "target_score": goal,
        "target_return": target(goal), "conditioned": bool(actor.conditioned),
        "reference_returns": {"random": lo, "expert": hi},
        "normalized_score": "100 (R - R_random) / (R_expert - R_random), D4RL's, with the data's own references",
        "data": dict(actor.data_provenance),
    } | ({"max_episode_steps": options.max_episode_steps} if options.max_episode_steps else {})
    if options.sweep_scores:
        if not actor.conditioned:
            protocol["target_sweep"] = "not run: the agent ignores the target return"
        else:
            samples |= {f"achieved_score_t{_x(x)}": v for x, v in sweep.items()}
            metrics |= derive(EvalResult(evaluator="conditioned_return", version=2, metrics={}, samples=samples,
                                         protocol={}))
            protocol["target_sweep"] = (f"the {options.episodes} reset seeds at each target score {options.sweep_scores}; "
                                        "target_corr: Pearson correlation of the target scores and the mean achieved "
                                        "scores; target_slope: least-squares slope of those means on the targets")
    return Measured(metrics=metrics, samples=samples, protocol=protocol)
