"""A paper's status per tier, derived from its spec and the records in `results/`, never typed.

- `not-implemented`: the spec has no such tier (the paper has no code yet);
- `implemented`: the tier exists but no current records meet its seed count, or it has no targets;
- `reproduced` / `partly-reproduced` / `not-reproduced`: all / some / none of its targets met.

Records count only while *current*: made under the spec's version, with the paper's source files
unchanged (same source hash) and the same evaluator versions. Others are *stale*: kept and shown,
never counted. Each (arm, seed) counts its one current run that gave a result (`ok` or `failed`);
an `invalid` run (no result) stands only while the seed has none. Two current runs of a seed that
both gave a result count neither: which is genuine cannot be told from the records, whose times
and run ids anyone can write (`repro verify` rejects the second).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from evals import provenance
from evals.evaluators import resolve_evaluator
from evals.record import Record
from evals.spec import TIER_NAMES, Spec, Tier
from evals.stats import Summary, TargetResult, check_target, summarize

SOURCE_CHANGED = "the paper's source files changed since this run"
STATUSES = ("not-implemented", "implemented", "reproduced", "partly-reproduced", "not-reproduced")


@lru_cache(maxsize=None)
def current_source_hash(module: str) -> str:
    return provenance.source_hash(module)


def arm_module(spec: Spec, record: Record) -> str:
    """The module the record's arm runs today (the record's own where the spec has no such arm)."""
    tier = spec.tiers.get(record.tier)
    arm = tier.arms.get(record.arm) if tier is not None else None
    return (arm.module or spec.module) if arm is not None else record.module


def staleness(record: Record, spec: Spec) -> str | None:
    """Why a record no longer counts, or None when it is current. A record whose arm the spec has
    moved to another module since (a module renamed, or folded into another) is stale by its
    source files, the reason naming both modules: `repro recertify` carries it over where today's
    module repeats its numbers."""
    if record.provenance.spec_version != spec.version:
        return f"made under spec version {record.provenance.spec_version}, the spec is at {spec.version}"
    module = arm_module(spec, record)
    if module != record.module:
        return f"{SOURCE_CHANGED} (arm {record.arm!r} now runs {module}; the record ran {record.module})"
    if record.provenance.source_hash != current_source_hash(module):
        return SOURCE_CHANGED
    tier = spec.tiers.get(record.tier)
    if tier is not None:
        versions = {}
        for i, e in enumerate(tier.evaluators):
            ev, _ = resolve_evaluator(e, f"{spec.id}.tiers.{record.tier}.evaluators[{i}]")
            versions[ev.name] = ev.version
        for result in record.evaluations:
            if result.evaluator in versions and versions[result.evaluator] != result.version:
                return f"evaluator {result.evaluator} v{result.version}, now v{versions[result.evaluator]}"
    return None


@dataclass
class TierStatus:
    paper: str
    tier: str
    status: str
    seeds: list[int] = field(default_factory=list)
    targets: list[TargetResult] = field(default_factory=list)
    arms: dict[str, dict[str, Summary]] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    stale: list[tuple[Record, str]] = field(default_factory=list)
    failed: list[Record] = field(default_factory=list)
    newest: str | None = None

    @property
    def targets_met(self) -> int:
        return sum(t.met for t in self.targets)

    def as_json(self) -> dict:
        return {
            "paper": self.paper, "tier": self.tier, "status": self.status, "seeds": self.seeds,
            "targets_met": self.targets_met, "targets_total": len(self.targets),
            "targets": [{"expr": t.expr, "test": t.test, "met": t.met, "detail": t.detail} for t in self.targets],
            "arms": {arm: {m: s.__dict__ for m, s in ms.items()} for arm, ms in self.arms.items()},
            "records": len(self.records), "stale_records": len(self.stale), "failed_records": len(self.failed),
            "newest_run": self.newest,
        }


def counted_per_seed(records: list[Record]) -> list[Record]:
    """The record that stands for each (arm, seed): its one run with a result, else its newest
    invalid run; none where two runs gave a result. No order of records changes which counts."""
    by_seed: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        by_seed.setdefault((r.arm, r.seed), []).append(r)
    counted = []
    for runs in by_seed.values():
        results = [r for r in runs if r.status != "invalid"]
        if len(results) <= 1:
            counted.append(results[0] if results else max(runs, key=lambda r: (r.provenance.finished_at, r.run_id)))
    return sorted(counted, key=lambda r: (r.arm, r.seed))


def metric_values(records: list[Record]) -> dict[tuple[str, str], dict[int, float]]:
    values: dict[tuple[str, str], dict[int, float]] = {}
    for r in records:
        if r.status == "ok":
            for m, v in r.metrics.items():
                values.setdefault((m, r.arm), {})[r.seed] = v
    return values


def evaluate_tier(tier: Tier, records: list[Record]) -> tuple[list[TargetResult], dict[str, dict[str, Summary]]]:
    """Target results and per-arm summaries (mean, 95% CI over seeds) of a set of records, taking
    only the seeds the spec fixes."""
    chosen = [r for r in counted_per_seed(records) if r.seed in tier.seeds]
    values = metric_values(chosen)
    targets = [check_target(t, values, tier.required_seeds) for t in tier.targets]
    arms: dict[str, dict[str, Summary]] = {}
    for (metric, arm), per_seed in sorted(values.items()):
        arms.setdefault(arm, {})[metric] = summarize([per_seed[s] for s in sorted(per_seed)])
    return targets, arms


def tier_status(spec: Spec, tier_name: str, records: list[Record]) -> TierStatus:
    tier = spec.tiers.get(tier_name)
    if tier is None:
        return TierStatus(spec.id, tier_name, "not-implemented")
    current, stale = [], []
    for r in records:
        why = staleness(r, spec)
        (stale.append((r, why)) if why else current.append(r))
    chosen = [r for r in counted_per_seed(current) if r.seed in tier.seeds]
    targets, arms = evaluate_tier(tier, current)
    seeds = sorted({r.seed for r in chosen if r.status == "ok"})
    # A diverged seed ("failed") counts as tried, and fails the targets it touches; a run whose
    # evaluation broke ("invalid") is no result at all, so its seed is still to be run.
    tried: dict[str, set[int]] = {}
    for r in chosen:
        if r.status in ("ok", "failed"):
            tried.setdefault(r.arm, set()).add(r.seed)
    pending = any(len(tried.get(arm, ())) < tier.required_seeds for t in tier.targets for arm in t.arms())
    if not tier.targets or pending:
        status = "implemented"
    else:
        met = sum(t.met for t in targets)
        status = "reproduced" if met == len(targets) else "partly-reproduced" if met else "not-reproduced"
    newest = max((r.provenance.finished_at for r in records), default=None)
    return TierStatus(spec.id, tier_name, status, seeds, targets, arms, chosen, stale,
                      [r for r in chosen if r.status != "ok"], newest)


def paper_status(spec: Spec, records: list[Record]) -> list[TierStatus]:
    return [tier_status(spec, t, [r for r in records if r.tier == t]) for t in TIER_NAMES]
