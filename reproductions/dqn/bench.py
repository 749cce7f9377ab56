"""DQN's benchmarks: training throughput of ours against Stable-Baselines3's DQN, same config."""

from __future__ import annotations

from reproductions.common.rl_bench import compare
from reproductions.dqn import dqn, sb3_baseline
from reproductions.dqn.dqn import Config

# The mini tier's CartPole settings (CleanRL's), its MinAtar settings, and the Pong pipeline, cut to a short budget.
CARTPOLE = Config(env_id="CartPole-v1", total_steps=6000, optimizer="adam", lr=2.5e-4, batch_size=128,
                  buffer_size=6000, learning_starts=1000, target_update_interval=500, train_freq=10,
                  eps_end=0.05, exploration_steps=3000, hidden=120, hidden2=84)
MINATAR = Config(env_id="evals.tasks.minatar:MinAtar-Breakout-v1", total_steps=3000, buffer_size=3000,
                 learning_starts=500, train_freq=4, target_update_interval=1000, exploration_steps=2000)
PONG = Config(env_id="ALE/Pong-v5", total_steps=1500, buffer_size=1500, learning_starts=500, train_freq=4,
              target_update_interval=1000, exploration_steps=1000)


def run() -> list[dict]:
    return [compare(f"DQN training, {cfg.env_id}, {cfg.total_steps} steps", dqn.train, sb3_baseline.train, cfg,
                    cfg.total_steps) for cfg in (CARTPOLE, MINATAR, PONG)]
