"""Pieces several papers' training code shares and no evaluator needs: the replay buffer, exact
resume state, DQN's convolutional torso, the Stable-Baselines3 baseline kit and the RL benchmark
helper. What evaluators need too (environments, datasets, the corpus) lives in `evals.tasks`."""
