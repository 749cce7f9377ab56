"""Mixtral of Experts (arXiv 2401.04088): a sparse top-2 MoE GPT against a dense GPT of equal active size."""

from reproductions.mixtral.mixtral import Config, build, train
from reproductions.transformer.lm import data_fingerprint, dry_run_step, required_data

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
