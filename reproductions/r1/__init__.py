"""DeepSeek-R1 (arXiv 2501.12948): GRPO with rule-based rewards from a small supervised model on
generated arithmetic (`grpo.py`, this package's module)."""

from reproductions.r1.grpo import Config, build, data_fingerprint, dry_run_step, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step"]
