"""Mamba (arXiv 2312.00752): the selective scan (`scan.py`), the Mamba block and model with the
recurrent step (`model.py`), the synthetic tasks (`mamba.py`, this package's module), the decoding
cost against attention (`decode.py`) and Pile language modelling at 130M (`lm.py`)."""

from reproductions.mamba.mamba import Config, build, data_fingerprint, dry_run_step, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step"]
