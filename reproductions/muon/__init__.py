"""Muon (Jordan et al., 2024): Newton-Schulz-orthogonalised momentum for the hidden matrices,
against AdamW on the project's GPT (`lm.py`), on the image classifier (`image.py`) and in the
NanoGPT speedrun setting (`speedrun.py`); the optimiser itself is `muon.py`."""

from reproductions.muon.lm import Config, build, data_fingerprint, dry_run_step, required_data, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
