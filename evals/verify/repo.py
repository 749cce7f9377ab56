"""The repository that records are verified against: options, git, and which records to verify."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

from evals import paths
from evals.paths import ROOT
from evals.record import record_files


class SelectionError(ValueError):
    """The records to verify cannot be found (an unknown base revision, no git)."""


@dataclass(frozen=True)
class VerifyOptions:
    repo: Path = ROOT                # the git repository whose history the records name
    results: Path = field(default_factory=paths.results_dir)  # records must lie under results/<paper>/<tier>/
    checkpoints: Path | None = None  # a cache of <sha256>.safetensors for full-tier re-evaluation
    rerun: bool = True               # re-execution (smoke, mini) and re-evaluation (full)
    rtol: float = 1e-3               # re-executed curves: relative tolerance ...
    atol: float = 1e-6               # ... and absolute tolerance, per logged value
    eval_episodes: int = 10          # full-tier re-evaluation budget per evaluator (episodes option)
    confidence: float = 0.99         # of the re-evaluation's two-sample bootstrap interval
    budget_s: float = 30 * 60        # re-execution to the end within this (evals/verify/plan.py) ...
    draw_seed: str | None = None     # ... and beyond it, the seed of the draw (default: HEAD)


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=60)


def has_commit(repo: Path, rev: str) -> bool:
    return git(repo, "cat-file", "-e", f"{rev}^{{commit}}").returncode == 0


def is_ancestor(repo: Path, rev: str, of: str = "HEAD") -> bool:
    return git(repo, "merge-base", "--is-ancestor", rev, of).returncode == 0


@lru_cache(maxsize=4096)
def read_at(repo: Path, rev: str, relpath: str) -> bytes | None:
    """A file's bytes at a revision (`git show REV:path`), None where it did not exist."""
    out = git(repo, "show", f"{rev}:{relpath}")
    return out.stdout if out.returncode == 0 else None


@lru_cache(maxsize=4096)
def added_in(repo: Path, path: Path) -> str | None:
    """The commit that added a file to the history of HEAD, None if it was never committed."""
    try:
        rel = path.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        return None
    shas = git(repo, "log", "--diff-filter=A", "--format=%H", "--", rel).stdout.split()
    return shas[-1].decode() if shas else None


def _fields(out: subprocess.CompletedProcess, what: str) -> list[str]:
    """git's NUL-separated output (-z): file names as they are, none quoted or escaped."""
    if out.returncode != 0:
        raise SelectionError(f"{what}: {out.stderr.decode(errors='replace').strip() or 'git failed'}")
    return [f for f in out.stdout.decode("utf-8", errors="surrogateescape").split("\0") if f]


@dataclass
class Changes:
    """What a change did under results/: the records to verify, the changes to records that the
    base already had (never allowed), and every other path it touched (checked by evals/verify/tree.py)."""

    records: list[Path]
    edited: list[tuple[str, str]]
    other: list[Path]


def changed_records(opts: VerifyOptions, base: str) -> Changes:
    """Paths under results/ that differ from `base`: committed since the merge base
    (`git diff base...HEAD`), and modified or untracked in the work tree."""
    if not opts.results.resolve().is_relative_to(opts.repo.resolve()):
        raise SelectionError(f"{opts.results} is not inside the repository {opts.repo}: name the records to verify")
    results = opts.results.resolve().relative_to(opts.repo.resolve()).as_posix()
    spec = f"{results}/"
    changes: dict[str, str] = {}
    diff = _fields(git(opts.repo, "diff", "-z", "--name-status", "--no-renames", f"{base}...HEAD", "--", spec),
                   f"cannot compare with {base!r} (pass --base REF, or the records to verify)")
    for status, path in zip(diff[::2], diff[1::2]):
        changes[path] = status[0]
    for entry in _fields(git(opts.repo, "status", "-z", "--porcelain", "--untracked-files=all", "--no-renames", "--", spec),
                         "git status"):
        code, path = entry[:2], entry[3:]
        changes[path] = "D" if "D" in code else ("A" if code == "??" or "A" in code else "M")
    under = lambda p: opts.results / Path(p).relative_to(results)  # noqa: E731 - as the tree checks name it
    is_record = lambda p: p.endswith(".json") and len(Path(p).relative_to(results).parts) == 3  # noqa: E731
    records = {p: s for p, s in changes.items() if is_record(p)}
    return Changes(
        records=[under(p) for p, s in sorted(records.items()) if s != "D"],
        edited=[(p, s) for p, s in sorted(records.items()) if s in "MD" and read_at(opts.repo, base, p) is not None],
        other=[under(p) for p, s in sorted(changes.items()) if p not in records and s != "D"])


def all_records(opts: VerifyOptions) -> list[Path]:
    return record_files(results=opts.results)


def rotating_sample(paths: list[Path], n: int, today: date | None = None) -> list[Path]:
    """`n` records, a different window each week, so that every record comes round in turn
    (ceil(len / n) weeks for all of them)."""
    if n <= 0 or n >= len(paths):
        return list(paths)
    week = ((today or date.today()).toordinal() - 1) // 7  # ordinal 1 is a Monday: weeks run Monday to Sunday
    start = (week * n) % len(paths)
    return [paths[(start + i) % len(paths)] for i in range(n)]
