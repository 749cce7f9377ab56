"""What may lie under results/: records, at results/<paper>/<tier>/<run_id>.json, and in the
folder beside a record (results/<paper>/<tier>/<run_id>/) the images its run published. Nothing
else: no symbolic link, file or folder (none is ever followed), no file beside a record that is
not its image, no folder without its record, no folder named like a record, nothing over the
size limits (a record's is checked when it is read, an image's here)."""

from __future__ import annotations

import os
from pathlib import Path

from evals.record import image_problem, linked
from evals.verify.report import RecordReport

RECORD_DEPTH = 3  # results/<paper>/<tier>/<run_id>.json


def path_problem(results: Path, path: Path) -> str | None:
    """Why `path` (under `results`) may not lie there; None when it may (a record's own checks
    are made when the record is verified)."""
    depth = len(path.relative_to(results).parts)
    if linked(path, results):
        return "a symbolic link (or inside a linked folder): never followed, not allowed under results/"
    if path.is_dir():
        return _folder_problem(path, depth)
    if depth == RECORD_DEPTH and path.suffix == ".json":
        return None
    if depth == RECORD_DEPTH + 1 and path.parent.with_suffix(".json").is_file() and path.parent.suffix != ".json":
        return image_problem(path)
    if not path.exists():
        return None  # deleted: a deleted record is the history check's
    return "neither a record (results/<paper>/<tier>/<run_id>.json) nor an image in the folder beside one"


def _folder_problem(folder: Path, depth: int) -> str | None:
    if depth < RECORD_DEPTH:
        return None
    if depth > RECORD_DEPTH:
        return "a folder inside a record's folder: only its images lie there"
    if folder.suffix == ".json":
        return "a folder named like a record"
    if not folder.with_suffix(".json").is_file():
        return f"a folder without its record {folder.name}.json beside it"
    return None


def tree_paths(results: Path) -> list[Path]:
    """Every folder and file under `results` that no record's checks cover (records and the images
    in their folders are checked with their record), without following links."""
    out = []
    for top, dirs, files in os.walk(results, followlinks=False):
        here = Path(top)
        depth = len(here.relative_to(results).parts)
        entries = [here / d for d in dirs] + [here / f for f in files]
        if depth == RECORD_DEPTH and here.with_suffix(".json").is_file() and here.suffix != ".json":
            dirs[:] = []  # a record's folder: check_images reads it with the record
            continue
        out += [p for p in entries if not (depth == RECORD_DEPTH - 1 and p.suffix == ".json" and p.is_file()
                                           and not p.is_symlink())]
    return sorted(out)


def tree_reports(results: Path, candidates: list[Path]) -> list[RecordReport]:
    """A rejected report for each of `candidates` that may not lie under `results`."""
    reports = []
    for path in candidates:
        problem = path_problem(results, path)
        if problem:
            rep = RecordReport(path)
            rep.fail("schema", "(path)", problem)
            reports.append(rep)
    return reports
