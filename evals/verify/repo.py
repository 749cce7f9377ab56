"""The repository that records are verified against: options, git, and which records to verify."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

from evals import paths
from evals.paths import ROOT


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


def added_in(repo: Path, path: Path) -> str | None:
    """The commit that added a file to the history of HEAD, None if it was never committed."""
    try:
        rel = path.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        return None
    shas = git(repo, "log", "--diff-filter=A", "--format=%H", "--", rel).stdout.split()
    return shas[-1].decode() if shas else None


def _lines(out: subprocess.CompletedProcess, what: str) -> list[str]:
    if out.returncode != 0:
        raise SelectionError(f"{what}: {out.stderr.decode().strip() or 'git failed'}")
    return [line for line in out.stdout.decode().splitlines() if line.strip()]


def changed_records(opts: VerifyOptions, base: str) -> tuple[list[Path], list[tuple[str, str]]]:
    """Records that differ from `base`: committed since the merge base (`git diff base...HEAD`),
    and modified or untracked in the work tree. Returns (paths to verify, [(path, A|M|D)] of the
    changes to records that `base` already had, which are never allowed)."""
    if not opts.results.resolve().is_relative_to(opts.repo.resolve()):
        raise SelectionError(f"{opts.results} is not inside the repository {opts.repo}: name the records to verify")
    results = opts.results.resolve().relative_to(opts.repo.resolve()).as_posix()
    spec = f"{results}/"
    changes: dict[str, str] = {}
    for line in _lines(git(opts.repo, "diff", "--name-status", "--no-renames", f"{base}...HEAD", "--", spec),
                       f"cannot compare with {base!r} (pass --base REF, or the records to verify)"):
        status, _, path = line.partition("\t")
        changes[path] = status[0]
    for line in _lines(git(opts.repo, "status", "--porcelain", "--untracked-files=all", "--no-renames", "--", spec),
                       "git status"):
        code, path = line[:2], line[3:]
        changes[path] = "D" if "D" in code else ("A" if code == "??" or "A" in code else "M")
    records = {p: s for p, s in changes.items() if p.endswith(".json")}
    paths = [opts.repo / p for p, s in sorted(records.items()) if s != "D"]
    edited = [(p, s) for p, s in sorted(records.items())
              if s in "MD" and read_at(opts.repo, base, p) is not None]
    return paths, edited


def all_records(opts: VerifyOptions) -> list[Path]:
    return sorted(opts.results.glob("*/*/*.json"))


def rotating_sample(paths: list[Path], n: int, today: date | None = None) -> list[Path]:
    """`n` records, a different window each week, so that every record comes round in turn
    (ceil(len / n) weeks for all of them)."""
    if n <= 0 or n >= len(paths):
        return list(paths)
    week = ((today or date.today()).toordinal() - 1) // 7  # ordinal 1 is a Monday: weeks run Monday to Sunday
    start = (week * n) % len(paths)
    return [paths[(start + i) % len(paths)] for i in range(n)]
