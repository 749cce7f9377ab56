"""PPO (arXiv 1707.06347): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.ppo.ppo import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
