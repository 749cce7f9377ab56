"""RoFormer (arXiv 2104.09864): rotary position embeddings in the GPT, against learned and sinusoidal."""

from reproductions.rope.rope import Config, build, train
from reproductions.transformer.lm import data_fingerprint, dry_run_step, required_data

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
