"""Deep RL from Human Preferences (arXiv 1706.03741): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.rlhf.rlhf import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
