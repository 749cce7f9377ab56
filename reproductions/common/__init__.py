"""Building blocks that belong to no single paper: RL envs, replay buffers, rollouts."""
