"""CLIP (arXiv 2103.00020): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.clip.clip import Config, build, data_fingerprint, dry_run_step, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step"]
