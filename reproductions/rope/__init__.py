"""RoFormer (arXiv 2104.09864): rotary position embeddings in the GPT, against learned and sinusoidal."""

from reproductions.rope.rope import Config
from reproductions.transformer.lm import build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
