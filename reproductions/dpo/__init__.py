"""Direct Preference Optimization (arXiv 2305.18290): DPO against PPO-based RLHF on the reward-KL
frontier of a generated review language with a known sentiment reward (`dpo.py`, this package's module)."""

from reproductions.dpo.dpo import Config, build, data_fingerprint, dry_run_step, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step"]
