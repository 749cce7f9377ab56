"""RL episodic return: N whole episodes on fixed evaluation reset seeds.

Protocol: undiscounted return of the environment's own reward, episodes end at termination or
the env's time limit, reset seeds `seed_base + i` (the same for every run and arm, and disjoint
from training resets), greedy (deterministic) actions unless the options say otherwise.
"""

from __future__ import annotations

import gymnasium as gym
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import Actor, capability
from evals.evaluators import Measured, register, shrunk
from evals.tasks.rollout import run_episodes


class RLReturnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    episodes: int = Field(10, ge=1)
    deterministic: bool = True
    seed_base: int = 1_000_000
    max_episode_steps: int | None = Field(None, ge=1)  # None: the env's own time limit (a dry run's budget sets it)


def tiny(options: RLReturnOptions) -> RLReturnOptions:
    """A dry run's budget: one episode of at most 20 steps."""
    return shrunk(options, episodes=1, max_episode_steps=20)


@register("rl_return", version=1, options=RLReturnOptions, tiny=tiny, metric_names=lambda o: ["return", "episode_length"])
def rl_return(agent, config, options: RLReturnOptions) -> Measured:
    actor = capability(agent, Actor, "rl_return")
    seeds = [options.seed_base + i for i in range(options.episodes)]
    limit = {"max_episode_steps": options.max_episode_steps} if options.max_episode_steps else None
    returns, lengths = run_episodes(config.env_id, lambda obs: actor.act(obs, deterministic=options.deterministic), seeds,
                                    limit)
    return Measured(metrics={"return": sum(returns) / len(returns), "episode_length": sum(lengths) / len(lengths)},
        samples={"return": returns, "episode_length": [float(x) for x in lengths]},
        protocol={
            "env_id": config.env_id,
            "gymnasium": gym.__version__,
            "episodes": options.episodes,
            "reset_seeds": f"{seeds[0]}..{seeds[-1]}",
            "actions": "deterministic (mean of the policy)" if options.deterministic else "sampled",
            "return": "undiscounted sum of the env's reward, to termination or time limit",
        } | ({"max_episode_steps": options.max_episode_steps} if options.max_episode_steps else {}),
    )
