"""What `repro verify` found: one finding per failed check, warnings apart, and the report."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evals.paths import ROOT


@dataclass(frozen=True)
class Finding:
    check: str   # schema, provenance, consistency, re-execution, re-evaluation, history, stale, verify
    field: str   # the record's field, dotted ("provenance.source_hash", "curves.train_return")
    reason: str


@dataclass
class RecordReport:
    path: Path
    run_id: str | None = None
    failures: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)  # checks run and passed, with a word on what they did

    def fail(self, check: str, field_: str, reason: str) -> None:
        self.failures.append(Finding(check, field_, reason))

    def warn(self, check: str, field_: str, reason: str) -> None:
        self.warnings.append(Finding(check, field_, reason))

    @property
    def accepted(self) -> bool:
        return not self.failures

    @property
    def stale(self) -> bool:
        return any(w.check == "stale" for w in self.warnings)


@dataclass
class Report:
    records: list[RecordReport] = field(default_factory=list)
    status: list[str] = field(default_factory=list)  # one line per (paper, tier) the records touch
    plan: list[str] = field(default_factory=list)    # which records were re-executed to the end, which in part
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.accepted for r in self.records)

    def summary(self) -> str:
        n = len(self.records)
        rejected = sum(not r.accepted for r in self.records)
        stale = sum(r.stale for r in self.records)
        return (f"verify: {n} record(s), {n - rejected} accepted, {rejected} rejected, {stale} stale "
                f"({self.elapsed_s:.1f}s)")

    def text(self) -> str:
        lines = []
        for r in self.records:
            where = shown(r.path)
            for f in r.failures:
                lines.append(f"FAIL {where}: {f.check}: {f.field}: {f.reason}")
            for w in r.warnings:
                lines.append(f"WARN {where}: {w.check}: {w.field}: {w.reason}")
            if r.accepted:
                lines.append(f"ok   {where}: {'; '.join(r.passed)}")
        lines.extend(self.plan)
        lines.extend(self.status)
        lines.append(self.summary())
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps({
            "records": [{"path": shown(r.path), "run_id": r.run_id, "accepted": r.accepted, "stale": r.stale,
                         "failures": [asdict(f) for f in r.failures], "warnings": [asdict(w) for w in r.warnings],
                         "passed": r.passed} for r in self.records],
            "status": self.status,
            "plan": self.plan,
            "summary": {"records": len(self.records), "accepted": sum(r.accepted for r in self.records),
                        "rejected": sum(not r.accepted for r in self.records),
                        "stale": sum(r.stale for r in self.records), "elapsed_s": round(self.elapsed_s, 2)},
        }, indent=1)


def shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    p = Path(path).absolute()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)
