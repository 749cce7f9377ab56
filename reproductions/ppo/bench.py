"""PPO's benchmark: training throughput of ours against Stable-Baselines3's PPO, same config."""

from __future__ import annotations

from reproductions.common.rl_bench import compare
from reproductions.ppo import ppo, sb3_baseline
from reproductions.ppo.ppo import Config

# The mini tier's CartPole settings (the RL Zoo's), cut to 32 updates.
CARTPOLE = Config(env_id="CartPole-v1", total_steps=8192, num_envs=8, num_steps=32, minibatch_size=256, epochs=20,
                  lr=1e-3, clip_ratio=0.2, anneal=True, gamma=0.98, gae_lambda=0.8, max_grad_norm=0.5)


def run() -> list[dict]:
    return [compare(f"PPO training, {CARTPOLE.env_id}, {CARTPOLE.total_steps} steps", ppo.train, sb3_baseline.train,
                    CARTPOLE, CARTPOLE.total_steps)]
