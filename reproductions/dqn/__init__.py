"""DQN (arXiv 1312.5602): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.dqn.dqn import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
