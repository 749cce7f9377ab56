"""The run record: one JSON per run under `results/<paper>/<tier>/`, the unit of evidence.

Writes are atomic (a temporary file, then `os.replace`) and never replace an existing record:
run ids carry a timestamp and a random suffix, and a clash is refused rather than overwritten.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_serializer

from evals import paths

RECORD_SCHEMA_VERSION = 1
MAX_CURVE_POINTS = 200
# Images a run leaves in its run folder (sample grids, reconstructions, plots) are published beside
# its record, in results/<paper>/<tier>/<run_id>/, for the site: raster formats only (an SVG can
# carry script), each at most this size, recognised by their first bytes.
IMAGE_MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff"}
MAX_IMAGE_BYTES = 2_000_000
# What a record names (papers, tiers, arms, metrics, curves, samples, protocol and hardware keys)
# reaches the site's pages and plots: a plain name, never markup or a matplotlib formula.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class RecordError(ValueError):
    """A record is malformed; the message names the file and the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or infinity is no result


class EvalResult(Strict):
    """What one evaluator measured: summary metrics, the per-episode / per-sample values they
    are computed from, and the protocol (so a number is never separated from how it was made)."""

    evaluator: Name
    version: int
    metrics: dict[Name, float]
    samples: dict[Name, list[float]] = Field(default_factory=dict)
    protocol: dict[Name, Any] = Field(default_factory=dict)


class TargetCheck(Strict):
    """A target that concerns this record's arm alone, checked on this seed."""

    expr: str
    value: float
    met: bool


class Recertification(Strict):
    """A re-execution of this record, in full, with newer code that gave every compared value bit
    for bit (`repro recertify`): the source hash and files before it, and the revision whose code
    gave the same numbers (the record's source_hash is that revision's)."""

    previous_source_hash: str
    previous_source_files: list[str]
    revision: str
    at: str
    checked: str  # what the re-execution compared
    # The module the record named before this link, where the spec had moved its arm to another
    # module since (a module renamed or folded into another); absent where the module stayed.
    previous_module: Name | None = None

    @model_serializer(mode="wrap")
    def _without_unmoved_module(self, handler):
        out = handler(self)
        if self.previous_module is None:
            out.pop("previous_module", None)  # links of records whose module never moved keep their shape
        return out


class Provenance(Strict):
    git_revision: str | None
    git_dirty: bool
    source_hash: str
    source_files: list[str]
    spec_version: int
    packages: dict[Name, str]
    hardware: dict[Name, Any]
    started_at: str
    finished_at: str
    wall_time_s: float
    train_time_s: float
    eval_time_s: float
    harness_overhead_s: float
    deterministic: bool
    data_fingerprint: str | None = None
    checkpoint_sha256: str | None = None
    checkpoint_path: str | None = None
    recertified: list[Recertification] = Field(default_factory=list)  # oldest first

    @field_validator("checkpoint_path")
    @classmethod
    def _inside_the_repository(cls, v: str | None) -> str | None:
        """Relative to the checkout (runs/...), and never above it."""
        if v is not None and (PurePosixPath(v).is_absolute() or ".." in PurePosixPath(v).parts or "\\" in v):
            raise ValueError(f"{v!r} is not a path inside the repository (relative, without '..')")
        return v

    def hash_chain(self) -> list[tuple[str | None, str, list[str]]]:
        """(revision, source hash, source files) from the run's own revision to the newest
        recertification: each revision's code hashes to its link's hash."""
        if not self.recertified:
            return [(self.git_revision, self.source_hash, self.source_files)]
        hashes = [(r.previous_source_hash, r.previous_source_files) for r in self.recertified]
        hashes.append((self.source_hash, self.source_files))
        revisions = [self.git_revision] + [r.revision for r in self.recertified]
        return [(rev, h, files) for rev, (h, files) in zip(revisions, hashes)]


class Record(Strict):
    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    run_id: Name
    paper: Name
    tier: Name
    arm: Name
    seed: int
    module: Name
    status: Literal["ok", "invalid", "failed", "prefix"]  # prefix: a verification re-execution, never committed
    error: str | None = None
    config: dict[str, Any]
    metrics: dict[Name, float] = Field(default_factory=dict)
    evaluations: list[EvalResult] = Field(default_factory=list)
    curves: dict[Name, list[tuple[int, float, float]]] = Field(default_factory=dict)
    targets: list[TargetCheck] = Field(default_factory=list)
    provenance: Provenance

    def module_chain(self) -> list[str]:
        """The module whose source files each link of `provenance.hash_chain()` hashed, oldest
        first: the record's `module` back to the recertification that moved its arm to it, and
        before that the module it replaced (`previous_module`)."""
        out = [self.module]
        for link in reversed(self.provenance.recertified):
            out.append(link.previous_module or out[-1])
        return out[::-1]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(paper: str, tier: str, arm: str, seed: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{paper}-{tier}-{arm}-s{seed}-{stamp}-{uuid.uuid4().hex[:6]}"


def thin_curve(points: list[tuple[int, float, float]], limit: int = MAX_CURVE_POINTS) -> list[tuple[int, float, float]]:
    """Keep at most `limit` points, evenly spread, always the first and the last."""
    if len(points) <= limit:
        return list(points)
    idx = sorted({round(i * (len(points) - 1) / (limit - 1)) for i in range(limit)})
    return [points[i] for i in idx]


def record_path(record: Record, results: Path | None = None) -> Path:
    return (results or paths.results_dir()) / record.paper / record.tier / f"{record.run_id}.json"


def _staged(record: Record, path: Path) -> Path:
    """`record` written whole to a temporary file beside `path`, to be linked or moved into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(record.model_dump_json(indent=1) + "\n")
    return tmp


def rewrite_record(record: Record, path: Path) -> None:
    """Replace the record at `path` atomically (recertification only: the one edit verify allows)."""
    os.replace(_staged(record, path), path)


def write_record(record: Record, results: Path | None = None) -> Path:
    path = record_path(record, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staged(record, path)
    try:
        os.link(tmp, path)  # atomic, and fails instead of replacing a record that exists
    except FileExistsError:
        raise RecordError(f"{path}: a record with run id {record.run_id!r} exists already; not overwritten") from None
    finally:
        tmp.unlink()
    return path


def image_problem(path: Path) -> str | None:
    """Why `path` may not be published beside a record (None when it may)."""
    magic = IMAGE_MAGIC.get(path.suffix.lower())
    if magic is None or not path.is_file() or path.is_symlink():
        return f"{path.name}: only PNG and JPEG files are published beside a record"
    if path.stat().st_size > MAX_IMAGE_BYTES:
        return f"{path.name}: {path.stat().st_size:,} bytes, over the {MAX_IMAGE_BYTES:,} allowed"
    with open(path, "rb") as f:
        if f.read(len(magic)) != magic:
            return f"{path.name}: its bytes are not a {path.suffix.lstrip('.').upper()} image"
    return None


def publish_images(run_dir: Path, record: Path) -> list[Path]:
    """Copy the images of `run_dir` (its top level) that may be published into the folder beside
    `record`; returns the copies."""
    out = []
    for image in sorted(p for p in Path(run_dir).iterdir() if p.suffix.lower() in IMAGE_MAGIC):
        if image_problem(image) is None:
            folder = record.with_suffix("")
            folder.mkdir(exist_ok=True)
            out.append(folder / image.name)
            out[-1].write_bytes(image.read_bytes())
    return out


def read_json(path: Path) -> Any:
    """A JSON file's contents; any way it is malformed is a RecordError naming the file."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as e:
        raise RecordError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    except RecursionError:
        raise RecordError(f"{path}: not a record: its JSON is nested too deeply") from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise RecordError(f"{path}: not a record: {e}") from None


def load_record(path: Path) -> Record:
    path = Path(path)
    data = read_json(path)
    try:
        return Record.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise RecordError(f"{path}: field '{loc}': {err['msg']}{more}") from None


def linked(path: Path, root: Path) -> bool:
    """Whether `path`, or a folder between `root` and it, is a symbolic link (never followed)."""
    rel = Path(path).relative_to(root).parts
    return any(root.joinpath(*rel[: i + 1]).is_symlink() for i in range(len(rel)))


def record_files(paper: str | None = None, tier: str | None = None, results: Path | None = None) -> list[Path]:
    """The record files under results/<paper>/<tier>/, none reached through a symbolic link."""
    root = results or paths.results_dir()
    return sorted(p for p in root.glob(f"{paper or '*'}/{tier or '*'}/*.json") if p.is_file() and not linked(p, root))


def load_records(paper: str | None = None, tier: str | None = None, results: Path | None = None) -> list[Record]:
    """The records, a malformed one raising its RecordError."""
    return [load_record(p) for p in record_files(paper, tier, results)]


def read_records(paper: str | None = None, tier: str | None = None,
                 results: Path | None = None) -> tuple[list[Record], list[RecordError]]:
    """The readable records, and a RecordError for each malformed one (listed as invalid, never
    stopping the others)."""
    records, invalid = [], []
    for path in record_files(paper, tier, results):
        try:
            records.append(load_record(path))
        except RecordError as e:
            invalid.append(e)
    return records, invalid
