"""A reward learned from preferences, scored on the final policy's own behaviour: how often it orders
pairs of held-out trajectory segments as the true reward does, and how far the policy's return
rises above doing nothing.

Protocol: `episodes` whole episodes of the trained policy (deterministic actions unless the
options say otherwise) on the reset seeds `seed_base + i`, disjoint from training resets and from
rl_return's; the same seeds once more with the zero action (the action box's point nearest 0).
- `return_gain`: per episode, the policy's undiscounted return minus the zero action's on the same
  reset seed (a sample each; the metric is their mean). Standing still is the baseline a reward
  model that learnt only the control cost already reaches, so gains are measured from it; a spec
  compares arms' gains (`return_gain[a] >= 0.7 * return_gain[b]`) for a normalised score.
- `pair_accuracy` (agents with a learned reward only): the policy's episodes are cut into
  non-overlapping segments of `segment_length` steps (the run's config's, unless set here), the
  segments shuffled by a generator seeded with `pair_seed` and paired in turn; pairs whose true
  returns tie are dropped. A pair is correct when the sums of the agent's `predicted_rewards` order
  its two segments as their true returns do. The per-pair segment returns are kept as samples, and
  `derive` recomputes both metrics from them.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import Actor, PreferenceRewardModel, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks.envs import make_env


class PreferenceAccuracyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    episodes: int = Field(100, ge=1)
    deterministic: bool = True
    seed_base: int = 2_000_000
    pair_seed: int = 0
    segment_length: int | None = Field(None, ge=1)  # None: the run's config's `segment_length`
    max_episode_steps: int | None = Field(None, ge=1)  # None: the env's own time limit (a dry run's budget sets it)


def tiny(options: PreferenceAccuracyOptions) -> PreferenceAccuracyOptions:
    """A dry run's budget: two episodes of at most 100 steps."""
    return shrunk(options, episodes=2, max_episode_steps=100)


def _names(o: PreferenceAccuracyOptions) -> list[str]:
    return ["return_gain", "zero_action_return", "pair_accuracy"]


def _episode(env: gym.Env, seed: int, act) -> tuple[list, list, list, list]:
    obs, _ = env.reset(seed=seed)
    observations, actions, next_obs, rewards, done = [], [], [], [], False
    while not done:
        a = act(obs)
        nxt, r, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        actions.append(np.asarray(a))
        next_obs.append(nxt)
        rewards.append(float(r))
        obs, done = nxt, terminated or truncated
    return observations, actions, next_obs, rewards


def derive(result: EvalResult) -> dict[str, float]:
    s = result.samples
    out = {"return_gain": float(np.mean(np.subtract(s["episode_return"], s["zero_action_return"])))}
    if "segment_true_return_1" in s:
        true_order = np.sign(np.subtract(s["segment_true_return_1"], s["segment_true_return_2"]))
        predicted = np.sign(np.subtract(s["segment_predicted_return_1"], s["segment_predicted_return_2"]))
        out["pair_accuracy"] = float(np.mean(true_order == predicted))
    return out


@register("preference_accuracy", version=1, options=PreferenceAccuracyOptions, metric_names=_names, derive=derive,
          tiny=tiny)
def preference_accuracy(agent, config, options: PreferenceAccuracyOptions) -> Measured:
    actor = capability(agent, Actor, "preference_accuracy")
    model = agent if isinstance(agent, PreferenceRewardModel) and agent.learns_reward else None
    env = make_env(config.env_id, **({"max_episode_steps": options.max_episode_steps} if options.max_episode_steps else {}))
    if not isinstance(env.action_space, gym.spaces.Box):
        env.close()
        raise ValueError(f"preference_accuracy: {config.env_id!r} has no continuous action box for the zero action")
    zero = np.clip(np.zeros(env.action_space.shape, dtype=env.action_space.dtype), env.action_space.low,
                   env.action_space.high)
    seeds = [options.seed_base + i for i in range(options.episodes)]
    k = options.segment_length or getattr(config, "segment_length", None)
    episodes, returns, zero_returns = [], [], []
    try:
        for seed in seeds:
            ep = _episode(env, seed, lambda obs: actor.act(obs, deterministic=options.deterministic))
            episodes.append(ep)
            returns.append(sum(ep[3]))
            zero_returns.append(sum(_episode(env, seed, lambda obs: zero)[3]))
    finally:
        env.close()
    gains = [r - z for r, z in zip(returns, zero_returns)]
    metrics = {"return_gain": float(np.mean(gains)), "zero_action_return": float(np.mean(zero_returns))}
    samples = {"return_gain": gains, "zero_action_return": zero_returns, "episode_return": returns}
    protocol = {
        "env_id": config.env_id, "gymnasium": gym.__version__, "episodes": options.episodes,
        "reset_seeds": f"{seeds[0]}..{seeds[-1]}",
        "actions": "deterministic (mean of the policy)" if options.deterministic else "sampled",
        "return_gain": "policy's undiscounted return minus the zero action's, same reset seed",
    } | ({"max_episode_steps": options.max_episode_steps} if options.max_episode_steps else {})
    if model is None:
        protocol["pair_accuracy"] = "not scored: the agent has no learned reward"
        return Measured(metrics=metrics, samples=samples, protocol=protocol)
    if not k:
        raise ValueError("preference_accuracy: no segment_length in the options or the run's config")
    true_r, pred_r = [], []
    for obs, actions, next_obs, rewards in episodes:
        predicted = np.asarray(model.predicted_rewards(np.stack(obs), np.stack(actions), np.stack(next_obs)))
        for s in range(0, len(rewards) - k + 1, k):
            true_r.append(float(np.sum(rewards[s:s + k])))
            pred_r.append(float(np.sum(predicted[s:s + k])))
    order = np.random.default_rng(options.pair_seed).permutation(len(true_r))
    pairs = [(a, b) for a, b in zip(order[0::2], order[1::2]) if true_r[a] != true_r[b]]
    if not pairs:  # e.g. a reward that is constant while the episode lasts
        protocol["pair_accuracy"] = f"not scored: no pair of segments of {k} steps with distinct true returns"
        return Measured(metrics=metrics, samples=samples, protocol=protocol)
    t1, t2 = [true_r[a] for a, _ in pairs], [true_r[b] for _, b in pairs]
    p1, p2 = [pred_r[a] for a, _ in pairs], [pred_r[b] for _, b in pairs]
    correct = [float(np.sign(a - b) == np.sign(c - d)) for a, b, c, d in zip(t1, t2, p1, p2)]
    metrics["pair_accuracy"] = float(np.mean(correct))
    samples |= {"pair_accuracy": correct, "segment_true_return_1": t1, "segment_true_return_2": t2,
                "segment_predicted_return_1": p1, "segment_predicted_return_2": p2}
    protocol |= {"segment_length": k, "pairs": len(pairs), "pair_seed": options.pair_seed,
                 "pair_accuracy": "share of pairs of the policy's own segments (non-overlapping, shuffled, "
                                  "ties in true return dropped) that the summed predicted rewards order as "
                                  "the true returns do"}
    return Measured(metrics=metrics, samples=samples, protocol=protocol)
