"""Pre-tokenised language-modelling corpora on disk (the Pile, as Mamba's and Pythia's papers train
on it): what a paper's full-tier training and the `token_perplexity` evaluator both read.

A root folder holds one flat file of token ids per split, `train.bin` and `validation.bin`, each a
little-endian array of `uint16` (vocabularies up to 65,536, e.g. GPT-NeoX's 50,277), documents
concatenated with the tokenizer's end-of-text token between them (nanoGPT's layout). Nothing here
downloads or tokenises: prepare the files on a machine with the data, e.g. with the GPT-NeoX
tokenizer over the Pile's train and validation JSONL, and point the run's `data_root` at them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "validation")


def split_path(root: str | Path, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    return Path(root) / f"{split}.bin"


def missing(root: str | Path, what: str = "the Pile") -> list[str]:
    """What is missing under `root` (empty when both splits are there), one line each."""
    out = []
    for split in SPLITS:
        p = split_path(root, split)
        if not p.is_file() or p.stat().st_size < 4:
            out.append(f"{what} tokens, {split} split: {p} (a flat uint16 token file; see evals/tasks/token_files.py)")
    return out


def tokens(root: str | Path, split: str) -> np.memmap:
    """The split's token ids, memory-mapped (uint16)."""
    p = split_path(root, split)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no {split} token file (see evals/tasks/token_files.py)")
    return np.memmap(p, dtype=np.uint16, mode="r")


def random_windows(data: np.ndarray, batch: int, length: int, generator: torch.Generator):
    """`batch` random windows of `length` + 1 tokens: inputs and next-token targets (long, batch x length)."""
    if len(data) <= length + 1:
        raise ValueError(f"a token file of {len(data)} tokens is too short for windows of {length}")
    starts = torch.randint(0, len(data) - length - 1, (batch,), generator=generator).tolist()
    x = torch.from_numpy(np.stack([np.asarray(data[s:s + length + 1], dtype=np.int64) for s in starts]))
    return x[:, :-1], x[:, 1:]


def fingerprint(root: str | Path) -> str:
    """Size and a hash of the first and last MiB of each split (cheap on hundreds of GB)."""
    parts = []
    for split in SPLITS:
        p = split_path(root, split)
        h, size = hashlib.sha256(), p.stat().st_size
        with p.open("rb") as f:
            h.update(f.read(2**20))
            f.seek(max(0, size - 2**20))
            h.update(f.read(2**20))
        parts.append(f"{split} {size // 2:,} tokens sha256(ends):{h.hexdigest()[:16]}")
    return f"{Path(root)}: " + ", ".join(parts)
