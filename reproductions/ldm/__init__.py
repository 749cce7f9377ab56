"""Latent Diffusion (arXiv 2112.10752): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.ldm.ldm import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
