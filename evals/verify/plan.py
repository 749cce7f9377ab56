"""Which smoke and mini records `repro verify` re-executes to the end, and which only up to their
tier's `verify_steps`.

Every record is re-executed to the end while the estimated cost of all of them (the wall times the
records themselves state, `provenance.wall_time_s`, run one after another) stays within the
budget, `VerifyOptions.budget_s`: 30 minutes, what a pull request's check may take on CI's 2 cores.
Over the budget, the records of tiers without `verify_steps` still run to the end (they have no
shorter check), and the others are drawn in an order shuffled by a generator seeded with the
revision under test (HEAD: on a pull request, the merge commit CI builds, which the contributor
cannot choose; `--draw-seed` names another): drawn records run to the end while the budget
lasts, at least one of them (none with a budget of 0), and the rest are prefix-checked. The report names both sets, so a
record's check says how far it was re-executed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from evals.record import Record
from evals.spec import SpecError, load_spec
from evals.verify.repo import SelectionError, VerifyOptions, git
from evals.verify.report import shown


@dataclass(frozen=True)
class Plan:
    whole: frozenset[Path] = frozenset()  # re-executed to the end (resolved paths)
    lines: list[str] = field(default_factory=list)  # what the report says of the plan

    def runs_whole(self, path: Path) -> bool:
        return Path(path).resolve() in self.whole


def draw_seed(opts: VerifyOptions) -> str:
    """The seed of the draw: --draw-seed, else the revision under test."""
    if opts.draw_seed:
        return opts.draw_seed
    out = git(opts.repo, "rev-parse", "HEAD")
    if out.returncode != 0:
        raise SelectionError("no HEAD revision to seed the draw of records re-executed in full: pass --draw-seed")
    return out.stdout.decode().strip()


def _has_prefix(rec: Record) -> bool:
    """Whether the record's tier offers a shorter check than the whole run (`verify_steps`)."""
    try:
        tier = load_spec(rec.paper).tiers.get(rec.tier)
    except SpecError:
        return False
    return tier is not None and tier.verify_steps is not None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def plan_reexecution(records: dict[Path, Record], opts: VerifyOptions) -> Plan:
    """The plan for re-executing `records` (resolved path -> record; smoke and mini only)."""
    cost = {p: max(r.provenance.wall_time_s, 0.0) for p, r in records.items()}
    total = sum(cost.values())
    if total <= opts.budget_s:
        return Plan(frozenset(records), [f"re-execution: {len(records)} record(s), about {_minutes(total)} by their "
                                         f"recorded wall times, within the budget of {_minutes(opts.budget_s)}: "
                                         "every one to the end"] if records else [])
    fixed = sorted(p for p, r in records.items() if not _has_prefix(r))
    seed = draw_seed(opts)
    order = sorted(set(records) - set(fixed), key=str)
    random.Random(seed).shuffle(order)
    spent, drawn = sum(cost[p] for p in fixed), []
    for p in order:
        if spent + cost[p] <= opts.budget_s or (not drawn and opts.budget_s > 0):
            drawn.append(p)
            spent += cost[p]
    prefix = [p for p in order if p not in drawn]
    names = lambda ps: ", ".join(shown(p) for p in sorted(ps)) or "none"  # noqa: E731
    return Plan(frozenset(fixed + drawn), [
        f"re-execution: {len(records)} record(s), about {_minutes(total)} by their recorded wall times, over the "
        f"budget of {_minutes(opts.budget_s)}: {len(drawn)} drawn with seed {seed[:12]} and {len(fixed)} of tiers "
        f"without verify_steps re-executed to the end (about {_minutes(spent)}), {len(prefix)} prefix-checked",
        f"re-execution to the end: {names(fixed + drawn)}",
        f"re-execution of the prefix only: {names(prefix)}"])
