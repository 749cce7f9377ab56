"""LLaVA (arXiv 2304.08485): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.llava.llava import Config, build, data_fingerprint, dry_run_step, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step"]
