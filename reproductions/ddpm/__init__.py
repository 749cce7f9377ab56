"""DDPM (arXiv 2006.11239): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.ddpm.ddpm import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
