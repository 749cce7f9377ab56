"""BitNet (arXiv 2310.11453): 1-bit BitLinear layers in the GPT, against its full-precision twin."""

from reproductions.bitnet.bitnet import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
