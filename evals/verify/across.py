"""Checks across the records of results/: run ids unique, each seed run once, no run recorded
twice (under another seed, or as another run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evals.record import Record, RecordError, load_record
from evals.spec import SpecError, load_spec
from evals.status import staleness
from evals.verify.repo import added_in, is_ancestor
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


def _trace(rec: Record) -> tuple:
    return tuple(sorted((name, tuple((s, v) for s, _, v in pts)) for name, pts in rec.curves.items() if pts))


def committed_before(repo: Path, mine: Path, other: Path) -> bool:
    """Whether `other` entered the history in an earlier commit than `mine` (times and run ids
    written in a record prove nothing: only the history orders two records)."""
    theirs, ours = added_in(repo, other), added_in(repo, mine)
    return theirs is not None and theirs != ours and (ours is None or is_ancestor(repo, theirs, ours))


def check_across(rec: Record, path: Path, current: bool, known: list[Known], repo: Path, rep: RecordReport) -> None:
    me = path.resolve()
    others = [k for k in known if k.path != me]
    for k in others:
        if k.record.run_id == rec.run_id:
            rep.fail("consistency", "run_id", f"{rec.run_id!r} is also the run id of {shown(k.path)} (run ids are unique)")
    same_tier = [k for k in others if k.record.run_id != rec.run_id and (k.record.paper, k.record.tier) == (rec.paper, rec.tier)]
    if current and rec.status != "invalid":
        for k in same_tier:
            r = k.record
            if k.current and (r.arm, r.seed) == (rec.arm, rec.seed) and r.status != "invalid" \
                    and not committed_before(repo, k.path, me):
                rep.fail("consistency", "seed", f"seed {rec.seed} of arm {rec.arm!r} has another result under the same "
                                                f"code: {shown(k.path)} (each seed is run once and every run is "
                                                "reported; a broken evaluation, status 'invalid', may be run again)")
    trace = _trace(rec)
    for k in same_tier:
        sha = rec.provenance.checkpoint_sha256
        if sha and sha == k.record.provenance.checkpoint_sha256:
            field_, why = "provenance.checkpoint_sha256", f"the checkpoint of {shown(k.path)}: one run recorded twice"
        elif trace and trace == _trace(k.record) and k.record.seed != rec.seed:
            field_, why = "seed", (f"seed {rec.seed}, but its curves are those of {shown(k.path)} "
                                   f"(seed {k.record.seed}): one run recorded under two seeds")
        else:
            continue
        if not committed_before(repo, k.path, me):
            rep.fail("consistency", field_, why)
