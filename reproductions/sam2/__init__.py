"""SAM 2 (arXiv 2408.00714): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.sam2.sam2 import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
