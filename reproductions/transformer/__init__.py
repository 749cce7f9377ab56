"""Attention Is All You Need (arXiv 1706.03762): the paper module the harness loads is the
encoder-decoder translation experiment; the GPT on the code corpus is `reproductions.transformer.lm`."""

from reproductions.transformer.translation import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
