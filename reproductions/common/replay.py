"""A uniform experience replay buffer (DQN's, reused by SAC), held in torch tensors.

Sampling draws from its own `torch.Generator`, whose state is checkpointed with the contents, so
a resumed run samples the same minibatches as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch


class ReplayBuffer:
    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...], seed: int,
                 obs_dtype: torch.dtype = torch.float32, action_dtype: torch.dtype = torch.float32):
        self.capacity = capacity
        self.obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.actions = torch.zeros((capacity, *action_shape), dtype=action_dtype)
        self.rewards = torch.zeros(capacity, dtype=torch.float32)
        # 1.0 where the episode *terminated* (no bootstrap); a time-limit truncation is not a terminal.
        self.terminated = torch.zeros(capacity, dtype=torch.float32)
        self.pos = 0
        self.size = 0
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        i = self.pos
        self.obs[i] = torch.as_tensor(np.asarray(obs))
        self.actions[i] = torch.as_tensor(np.asarray(action))
        self.rewards[i] = float(reward)
        self.next_obs[i] = torch.as_tensor(np.asarray(next_obs))
        self.terminated[i] = float(terminated)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), generator=self.generator)
        batch = {
            "obs": self.obs[idx], "actions": self.actions[idx], "rewards": self.rewards[idx],
            "next_obs": self.next_obs[idx], "terminated": self.terminated[idx],
        }
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def state_dict(self) -> dict:
        n = self.size
        return {
            "obs": self.obs[:n].clone(), "next_obs": self.next_obs[:n].clone(), "actions": self.actions[:n].clone(),
            "rewards": self.rewards[:n].clone(), "terminated": self.terminated[:n].clone(),
            "pos": self.pos, "size": self.size, "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(self, name)[:n] = state[name]
        self.pos, self.size = int(state["pos"]), n
        self.generator.set_state(state["generator"])
