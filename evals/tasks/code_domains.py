"""Parts of the code corpus: the files of some top-level packages of the standard library, or all
files but those, each part with the corpus's own train / validation split.

A domain is a string: `""` is the whole corpus (what `code_corpus` gives), `"idlelib,tkinter"`
the files under those top-level packages, and `"!idlelib,tkinter"` every file but those (modules
at the top level included). A model pre-trained on `"!X"` has never seen a file of `"X"`: the
held-out part a fine-tuning experiment (LoRA) adapts to. Files keep the split `code_corpus`
gives them (a hash of the path), so a domain's validation files are validation files of the
corpus too.

Kept apart from `code_corpus.py` so that the corpus every language-model paper trains on, and
the source hash of those papers, stay as they were.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch

from evals.tasks import code_corpus
from evals.tasks.code_corpus import SEPARATOR, SPLITS, TokenSplit


def parse(domain: str) -> tuple[bool, frozenset[str]]:
    """(excluded, packages) of a domain string; ValueError for a malformed one."""
    excluded = domain.startswith("!")
    names = frozenset(n.strip() for n in domain.lstrip("!").split(",") if n.strip())
    if excluded and not names:
        raise ValueError(f"domain {domain!r}: '!' needs the packages it leaves out")
    return excluded, names


def in_domain(rel: Path, domain: str) -> bool:
    """Whether the corpus file `rel` (relative to the stdlib) belongs to `domain`."""
    if not domain:
        return True
    excluded, names = parse(domain)
    inside = len(rel.parts) > 1 and rel.parts[0] in names
    return inside != excluded


def domain_files(domain: str, root: Path | None = None) -> list[Path]:
    base = root or code_corpus.stdlib_root()
    files = [rel for rel in code_corpus.corpus_files(base) if in_domain(rel, domain)]
    if not files:
        raise FileNotFoundError(f"{base}: no corpus file in domain {domain!r} (top-level packages of the stdlib)")
    return files


@lru_cache(maxsize=8)
def load_split(split: str, domain: str = "", val_percent: int = 10, root: str | None = None) -> bytes:
    """The split's files of the domain, concatenated in order as `code_corpus.load_split` does
    (for the domain `""`, the same bytes)."""
    if not domain:
        return code_corpus.load_split(split, val_percent, root)
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    base = Path(root) if root else code_corpus.stdlib_root()
    parts = [(base / rel).read_bytes() for rel in domain_files(domain, base)
             if code_corpus.split_of(rel, val_percent) == split]
    if not parts:
        raise FileNotFoundError(f"{base}: domain {domain!r} has no file in the {split} split at val_percent={val_percent}")
    return SEPARATOR.join(parts)


@lru_cache(maxsize=8)
def token_split(split: str, domain: str = "", tokenizer_name: str = "bytes", vocab_size: int = 1024,
                val_percent: int = 10) -> TokenSplit:
    """A domain's split as token ids (the tokenizer is the corpus's, trained on its whole train split)."""
    if not domain:
        return code_corpus.token_split(split, tokenizer_name, vocab_size, val_percent)
    data = load_split(split, domain, val_percent)
    ids = code_corpus.tokenizer(tokenizer_name, vocab_size, val_percent).encode(data)
    dtype = torch.uint8 if tokenizer_name == "bytes" else torch.int32
    return TokenSplit(torch.tensor(ids, dtype=dtype), len(data))


@lru_cache(maxsize=8)
def fingerprint(domain: str = "", val_percent: int = 10, root: str | None = None) -> str:
    """The corpus's fingerprint, and for a domain its files and their contents as one hash."""
    whole = code_corpus.fingerprint(val_percent, root)
    if not domain:
        return whole
    base = Path(root) if root else code_corpus.stdlib_root()
    h, n_files, n_bytes = hashlib.sha256(), 0, 0
    for rel in domain_files(domain, base):
        data = (base / rel).read_bytes()
        h.update(f"{rel.as_posix()}\0{code_corpus.split_of(rel, val_percent)}\0".encode() + hashlib.sha256(data).digest())
        n_files, n_bytes = n_files + 1, n_bytes + len(data)
    return f"{whole}; domain {domain!r} sha256:{h.hexdigest()[:16]} ({n_files} files, {n_bytes:,} bytes)"
