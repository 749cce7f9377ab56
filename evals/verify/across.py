"""Checks across the records of results/: run ids unique, each seed run once, no run recorded
twice (under another seed, or as another run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evals.record import Record, RecordError, load_record
from evals.spec import SpecError, load_spec
from evals.status import staleness
from evals.verify.report import RecordReport, shown


@dataclass(frozen=True)
class Known:
    path: Path
    record: Record
    current: bool


def is_current(rec: Record) -> bool:
    try:
        return staleness(rec, load_spec(rec.paper)) is None
    except SpecError:
        return False


def index(paths: list[Path]) -> list[Known]:
    """Every readable record among `paths` (an unreadable one fails on its own when verified)."""
    known = []
    for p in paths:
        try:
            rec = load_record(p)
        except RecordError:
            continue
        known.append(Known(p.resolve(), rec, is_current(rec)))
    return known


def _order(rec: Record) -> tuple[str, str]:
    return rec.provenance.finished_at, rec.run_id


def _trace(rec: Record) -> tuple:
    return tuple(sorted((name, tuple((s, v) for s, _, v in pts)) for name, pts in rec.curves.items() if pts))


def check_across(rec: Record, path: Path, current: bool, known: list[Known], rep: RecordReport) -> None:
    me = path.resolve()
    others = [k for k in known if k.path != me]
    for k in others:
        if k.record.run_id == rec.run_id:
            rep.fail("consistency", "run_id", f"{rec.run_id!r} is also the run id of {shown(k.path)} (run ids are unique)")
    earlier = [k for k in others if k.record.run_id != rec.run_id and _order(k.record) < _order(rec)
               and (k.record.paper, k.record.tier) == (rec.paper, rec.tier)]
    if current:
        for k in earlier:
            r = k.record
            if k.current and (r.arm, r.seed) == (rec.arm, rec.seed) and r.status != "invalid":
                rep.fail("consistency", "seed", f"seed {rec.seed} of arm {rec.arm!r} was run already under the same "
                                                f"code: {shown(k.path)} (each seed is run once and every run is "
                                                "reported; a broken evaluation, status 'invalid', may be run again)")
    trace = _trace(rec)
    for k in earlier:
        sha = rec.provenance.checkpoint_sha256
        if sha and sha == k.record.provenance.checkpoint_sha256:
            rep.fail("consistency", "provenance.checkpoint_sha256", f"the checkpoint of {shown(k.path)}: one run "
                                                                    "recorded twice")
        elif trace and trace == _trace(k.record) and k.record.seed != rec.seed:
            rep.fail("consistency", "seed", f"seed {rec.seed}, but its curves are those of {shown(k.path)} "
                                            f"(seed {k.record.seed}): one run recorded under two seeds")
