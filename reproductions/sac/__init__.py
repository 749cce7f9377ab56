"""SAC (arXiv 1812.05905): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.sac.sac import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
