"""FineWeb as the NanoGPT speedrun reads it: GPT-2-tokenised shards in modded-nanogpt's format.

A root folder (default `data/fineweb10B`) holds `fineweb_train_*.bin` and `fineweb_val_*.bin`
(modded-nanogpt's `data/cached_fineweb10B.py` downloads them: 100M tokens per shard, the first
validation shard of 100M tokens). Each shard is a header of 256 int32 (magic 20240520, version 1,
the token count) followed by the tokens as uint16. Training reads the train shards in order,
in consecutive windows; the validation loss is scored on the first `tokens` validation tokens in
consecutive non-overlapping windows (the speedrun's 10,485,760), the same for every run.

Nothing here downloads: a missing root is reported by `missing` with what to put there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

MAGIC, VERSION, HEADER_INTS = 20240520, 1, 256
VOCAB_SIZE = 50257  # GPT-2's tokenizer
SPLITS = {"train": "fineweb_train_*.bin", "validation": "fineweb_val_*.bin"}
DOWNLOAD = "modded-nanogpt's `python data/cached_fineweb10B.py 8` fetches them: 8 train shards, 800M tokens"


def shard_paths(root: str | Path, split: str) -> list[Path]:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {sorted(SPLITS)}")
    return sorted(Path(root).glob(SPLITS[split]))


def missing(root: str | Path) -> list[str]:
    """What the root lacks (empty when both splits have shards)."""
    return [f"FineWeb GPT-2 token shards: no {SPLITS[s]} in {root} ({DOWNLOAD})"
            for s in SPLITS if not shard_paths(root, s)]


def read_shard(path: str | Path) -> torch.Tensor:
    """A shard's tokens (uint16 stored, int32 returned), its header checked."""
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    if len(header) < 3 or header[0] != MAGIC or header[1] != VERSION:
        raise ValueError(f"{path}: not a modded-nanogpt token shard (magic {header[:1]}, expected {MAGIC}, version {VERSION})")
    n = int(header[2])
    tokens = np.fromfile(path, dtype=np.uint16, count=n, offset=HEADER_INTS * 4)
    if len(tokens) != n:
        raise ValueError(f"{path}: header says {n} tokens, the file holds {len(tokens)}")
    return torch.from_numpy(tokens.astype(np.int32))


def write_shard(path: str | Path, tokens) -> None:
    """Write tokens in the shard format (for tests and for converting other token streams)."""
    tokens = np.asarray(tokens, dtype=np.uint16)
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = MAGIC, VERSION, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.tobytes())


def train_windows(root: str | Path, batch_size: int, seq_len: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches (x, y) of `batch_size` consecutive windows of `seq_len` tokens, through the train
    shards in order (a shard's remainder is dropped, as the speedrun's loader does), from batch
    `start_batch` on; after the last shard it starts over."""
    paths = shard_paths(root, "train")
    if not paths:
        raise FileNotFoundError("; ".join(missing(root)))
    per_batch, index = batch_size * seq_len, 0
    while True:
        for path in paths:
            tokens = read_shard(path)
            for at in range(0, len(tokens) - per_batch, per_batch):
                if index >= start_batch:
                    buf = tokens[at:at + per_batch + 1].long()
                    yield buf[:-1].view(batch_size, seq_len), buf[1:].view(batch_size, seq_len)
                index += 1


def validation_tokens(root: str | Path, n_tokens: int) -> torch.Tensor:
    """The first `n_tokens` + 1 tokens of the validation shards (inputs and their next tokens)."""
    out, have = [], 0
    for path in shard_paths(root, "validation"):
        out.append(read_shard(path)[: n_tokens + 1 - have])
        have += len(out[-1])
        if have >= n_tokens + 1:
            return torch.cat(out)
    raise ValueError(f"{root}: {n_tokens} validation tokens asked, the validation shards hold {max(0, have - 1)}")


def validation_windows(root: str | Path, n_tokens: int, seq_len: int, batch_size: int):
    """The scored windows: the first `n_tokens` validation predictions, consecutive and
    non-overlapping windows of `seq_len`, in batches of `batch_size` windows."""
    if n_tokens % seq_len:
        raise ValueError(f"{n_tokens} validation tokens are not whole windows of {seq_len}")
    tokens = validation_tokens(root, n_tokens).long()
    x, y = tokens[:-1].view(-1, seq_len), tokens[1:].view(-1, seq_len)
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def fingerprint(root: str | Path) -> str:
    """The shards' names and sizes and a hash of each one's first MiB (hashing 10 GB would take minutes)."""
    h, n_files, n_bytes = hashlib.sha256(), 0, 0
    for split in SPLITS:
        for path in shard_paths(root, split):
            size = path.stat().st_size
            with open(path, "rb") as f:
                h.update(f"{split}/{path.name}\0{size}\0".encode() + hashlib.sha256(f.read(1 << 20)).digest())
            n_files, n_bytes = n_files + 1, n_bytes + size
    return f"fineweb10B-gpt2 sha256:{h.hexdigest()[:16]} ({n_files} shards, {n_bytes:,} bytes)"
