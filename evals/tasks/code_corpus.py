"""A real, offline code corpus: the Python standard library's own source.

The running interpreter's stdlib (`sysconfig.get_paths()["stdlib"]`), every `.py` file in sorted
order, without site-packages, test packages (`test/`, `tests/`, `idle_test/`) or `test_*` files:
about 12 MB of code that every machine with Python has. Files go whole to one split, chosen by a
hash of their relative path, so the validation split is code the model never saw, and adding a
file to a new Python version moves no other file between splits.

Tokens are bytes (a vocabulary of 256; losses convert to bits per byte), or optionally a BPE
trained here on the train split with `tokenizers` (bits per byte then divide the total loss by
the byte count of the text, not the token count).
"""

from __future__ import annotations

import hashlib
import math
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

EXCLUDED_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
SEPARATOR = b"\n\n"
SPLITS = ("train", "validation")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(root: Path | None = None) -> list[Path]:
    """The corpus's files, relative to `root`, in a fixed (sorted) order."""
    root = root or stdlib_root()
    files = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        if EXCLUDED_DIRS.isdisjoint(rel.parts[:-1]) and not rel.name.startswith("test_"):
            files.append(rel)
    return files


def split_of(rel: Path, val_percent: int) -> str:
    """A file's split, from a hash of its path alone (stable across machines and versions)."""
    bucket = int.from_bytes(hashlib.sha256(rel.as_posix().encode()).digest()[:4], "big") % 100
    return "validation" if bucket < val_percent else "train"


@lru_cache(maxsize=8)
def load_split(split: str, val_percent: int = 10, root: str | None = None) -> bytes:
    """The split's files concatenated in order, separated by a blank line."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    base = Path(root) if root else stdlib_root()
    parts = [(base / rel).read_bytes() for rel in corpus_files(base) if split_of(rel, val_percent) == split]
    if not parts:
        raise FileNotFoundError(f"{base}: no Python files for the {split} split (is this a Python stdlib?)")
    return SEPARATOR.join(parts)


@lru_cache(maxsize=4)
def fingerprint(val_percent: int = 10, root: str | None = None) -> str:
    """The files, their split and their contents, as one hash (recorded with every run)."""
    base = Path(root) if root else stdlib_root()
    h = hashlib.sha256()
    n_files, n_bytes = 0, 0
    for rel in corpus_files(base):
        data = (base / rel).read_bytes()
        h.update(f"{rel.as_posix()}\0{split_of(rel, val_percent)}\0".encode() + hashlib.sha256(data).digest())
        n_files, n_bytes = n_files + 1, n_bytes + len(data)
    return f"python-stdlib sha256:{h.hexdigest()[:16]} ({n_files} files, {n_bytes:,} bytes, val {val_percent}%)"


# -- tokenizers --------------------------------------------------------------------------------
class ByteTokenizer:
    """Tokens are the UTF-8 bytes: nothing to train, and one token is one byte."""

    vocab_size = 256
    name = "bytes"

    def encode(self, data: bytes | str) -> list[int]:
        return list(data.encode() if isinstance(data, str) else data)

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class BPETokenizer:
    """A byte-level BPE trained on the train split with `tokenizers` (deterministic for a size)."""

    name = "bpe"

    def __init__(self, text: str, vocab_size: int):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        chunk = 1 << 20
        tok.train_from_iterator((text[i:i + chunk] for i in range(0, len(text), chunk)), trainer)
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()

    def encode(self, data: bytes | str) -> list[int]:
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


@lru_cache(maxsize=4)
def tokenizer(name: str = "bytes", vocab_size: int = 1024, val_percent: int = 10):
    if name == "bytes":
        return ByteTokenizer()
    if name == "bpe":
        return BPETokenizer(load_split("train", val_percent).decode("utf-8", errors="replace"), vocab_size)
    raise ValueError(f"tokenizer {name!r}: expected 'bytes' or 'bpe'")


@dataclass(frozen=True)
class TokenSplit:
    """A split as one long tensor of token ids, and the bytes it came from."""

    tokens: torch.Tensor
    n_bytes: int

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / len(self.tokens)


@lru_cache(maxsize=8)
def token_split(split: str, tokenizer_name: str = "bytes", vocab_size: int = 1024, val_percent: int = 10) -> TokenSplit:
    data = load_split(split, val_percent)
    ids = tokenizer(tokenizer_name, vocab_size, val_percent).encode(data)
    dtype = torch.uint8 if tokenizer_name == "bytes" else torch.int32
    return TokenSplit(torch.tensor(ids, dtype=dtype), len(data))


def random_batch(tokens: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator):
    """Random windows (x, y = x shifted by one), as nanoGPT samples them."""
    starts = torch.randint(len(tokens) - block_size - 1, (batch_size,), generator=generator)
    offsets = torch.arange(block_size + 1)
    window = tokens[starts[:, None] + offsets].long()
    return window[:, :-1], window[:, 1:]


def fixed_windows(tokens: torch.Tensor, n_tokens: int, block_size: int, batch_size: int):
    """The first `n_tokens` predictions of a split, as consecutive non-overlapping windows in
    batches: the same tokens for every model and every run (the evaluation protocol)."""
    n_windows = max(1, n_tokens // block_size)
    if n_windows * block_size + 1 > len(tokens):
        raise ValueError(f"{n_tokens} evaluation tokens asked, the split has {len(tokens) - 1}")
    window = tokens[: n_windows * block_size + 1].long()
    x, y = window[:-1].view(n_windows, block_size), window[1:].view(n_windows, block_size)
    for i in range(0, n_windows, batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def bits_per_byte(mean_loss_nats: float, bytes_per_token: float) -> float:
    """Mean cross-entropy per token (nats) -> bits per byte of text."""
    return mean_loss_nats / math.log(2) / bytes_per_token
