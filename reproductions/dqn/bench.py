"""DQN's benchmarks: training throughput of ours against Stable-Baselines3's DQN, same config."""

from __future__ import annotations

from reproductions.common.rl_bench import compare
from reproductions.dqn import dqn, sb3_baseline
from reproductions.dqn.dqn import Config

# The mini tier's CartPole settings (the RL Zoo's) and its Pong settings, cut to a short budget.
CARTPOLE = Config(env_id="CartPole-v1", total_steps=6000, optimizer="adam", lr=2.3e-3, batch_size=64,
                  buffer_size=6000, learning_starts=1000, target_update_interval=10, train_freq=256,
                  gradient_steps=128, eps_end=0.04, exploration_steps=1000, max_grad_norm=10.0)
PONG = Config(env_id="ALE/Pong-v5", total_steps=1500, buffer_size=1500, learning_starts=500, train_freq=4,
              target_update_interval=1000, exploration_steps=1000)


def run() -> list[dict]:
    return [compare(f"DQN training, {cfg.env_id}, {cfg.total_steps} steps", dqn.train, sb3_baseline.train, cfg,
                    cfg.total_steps) for cfg in (CARTPOLE, PONG)]
