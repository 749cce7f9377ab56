"""Decision Transformer (arXiv 2106.01345): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.decision_transformer.dt import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
