"""ControlNet (arXiv 2302.05543): the paper module the harness loads (`build`, `train`, `Config`)."""

from reproductions.controlnet.controlnet import Config, build, data_fingerprint, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "required_data"]
