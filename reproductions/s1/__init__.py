"""s1 (arXiv 2501.19393): budget forcing at decode time (`forcing.py`) on R1's arithmetic models,
and s1K-style data curation (`s1.py`, this package's module)."""

from reproductions.s1.s1 import Config, build, data_fingerprint, dry_run_step, train

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step"]
