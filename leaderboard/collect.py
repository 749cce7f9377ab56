"""Specs and run records -> what the site shows of each paper: per tier, the status and its evidence.

Statuses come from `evals.status.tier_status`, never typed. The site adds one of its own: a tier
is *stale* when it has stale records and no current ones (the code or spec changed since every
run), so a reader sees that runs exist but no longer count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from evals.record import IMAGE_MAGIC, Record, RecordError, load_record, record_files
from evals.spec import TIER_NAMES, Published, Spec, Target, Tier, load_spec_file, with_checked_links
from evals.stats import Summary, TargetResult, summarize, term_values
from evals.status import TierStatus, metric_values, tier_status

STATUS_LABELS = {
    "reproduced": "reproduced",
    "partly-reproduced": "partly reproduced",
    "not-reproduced": "not reproduced",
    "implemented": "implemented",
    "stale": "stale",
    "not-implemented": "not implemented",
}
STATUS_RANK = {s: i for i, s in enumerate(STATUS_LABELS)}  # best first: the sort order on the site
SAMPLE_SUFFIXES = tuple(IMAGE_MAGIC)


def load_specs(root: Path) -> list[Spec]:
    return with_checked_links([load_spec_file(p) for p in sorted(root.glob("*/spec.yaml"))], root)


@dataclass
class RunFile:
    """A record and the file it was read from."""

    path: Path
    record: Record

    @property
    def samples(self) -> list[Path]:
        """Image files a run saved beside its record, in `<tier>/<run_id>/` (sample grids,
        reconstructions): shown on the paper page as they are."""
        folder = self.path.with_suffix("")
        if not folder.is_dir() or folder.is_symlink():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES and not p.is_symlink())


@dataclass
class TierView:
    name: str
    tier: Tier | None
    status: TierStatus
    runs: list[RunFile] = field(default_factory=list)
    unreadable: list[RecordError] = field(default_factory=list)  # malformed records: listed as invalid, left out

    @property
    def display(self) -> str:
        """The status the site shows: the harness's, or `stale` (stale records, no current ones)."""
        current = len(self.runs) - len(self.status.stale)
        if self.status.status != "not-implemented" and self.status.stale and current == 0:
            return "stale"
        return self.status.status

    @property
    def label(self) -> str:
        return STATUS_LABELS[self.display]

    @property
    def invalid(self) -> list[Record]:
        """Counted seeds whose evaluation broke: no result, never a score of zero."""
        return [r for r in self.status.records if r.status == "invalid"]

    def role(self, record: Record) -> str:
        """Why a record does or does not count towards the tier's status."""
        for r, why in self.status.stale:
            if r is record:
                return f"stale: {why}"
        if any(r is record for r in self.status.records):
            return {"ok": "counted", "failed": "counted (failed)", "invalid": "invalid: no result"}[record.status]
        if self.tier is not None and record.seed not in self.tier.seeds:
            return "seed not in the spec"
        if record.status == "invalid":
            return "invalid: superseded by the seed's result"
        return "not counted: another run of this seed gave a result too"


@dataclass
class Headline:
    """Our number at one of the paper's published numbers: the full tier's arm and metric that the
    linked target names, over its counted seeds."""

    term: str
    summary: Summary


@dataclass
class Claim:
    """A tier's first target as the leaderboard states it: its verdict, and the mean over seeds (or,
    against another arm, the paired per-seed difference) with its 95% bootstrap CI."""

    target: Target
    result: TargetResult
    verdict: str                # met | not-met | pending (the tier has not decided: seeds missing, or stale)
    estimate: Summary | None    # None while no counted seed reports the target's metrics
    difference: bool            # the estimate is left minus right, per seed

    @property
    def words(self) -> str:
        """The claim's first clause, from the target's description; the expression when it has none."""
        text = (self.target.description or "").strip()
        return re.split(r": |, | \(|; ", text, maxsplit=1)[0] if text else self.target.expr


DECIDED = ("reproduced", "partly-reproduced", "not-reproduced")


def _task(config: dict) -> str | None:
    """The environment or game a config names, without its namespace and version (ALE/Pong-v5: pong)."""
    name = next((config[k] for k in ("env_id", "env", "game") if isinstance(config.get(k), str)), None)
    return re.sub(r"^.*/|-v\d+$", "", name).lower() if name else None


@dataclass
class Paper:
    spec: Spec
    tiers: dict[str, TierView]

    @property
    def runs(self) -> list[RunFile]:
        return [r for t in self.tiers.values() for r in t.runs]

    @property
    def newest(self) -> str | None:
        return max((r.record.provenance.finished_at for r in self.runs), default=None)

    @property
    def published(self) -> Published | None:
        return self.spec.published[0] if self.spec.published else None

    def target_for(self, pub: Published) -> Target | None:
        """The full tier's target at a published number's own setting: on the same metric with a
        constant bound, which is the published value itself, or else the one target whose arm runs
        the published number's environment or game (a bound set at a stated fraction of it, as SAC's
        90%)."""
        view = self.tiers["full"]
        if view.tier is None:
            return None
        candidates = [t for t in view.tier.targets
                      if t.parsed[0].metric == pub.metric and t.parsed[2].const is not None]
        exact = [t for t in candidates if t.parsed[2].const == pub.value]
        if exact:
            return exact[0]
        task = _task(pub.setting)
        same_task = [t for t in candidates if task and _task(self._arm_config(t.parsed[0].arm)) == task]
        return same_task[0] if len(same_task) == 1 else None

    def _arm_config(self, arm: str) -> dict:
        tier = self.tiers["full"].tier
        return {**tier.config, **(tier.arms[arm].config if arm in tier.arms else {})}

    def ours_for(self, pub: Published) -> Headline | None:
        """The full tier's result at a published number, when counted runs exist there."""
        target = self.target_for(pub)
        if target is None:
            return None
        lhs = target.parsed[0]
        s = self.tiers["full"].status.arms.get(lhs.arm, {}).get(lhs.metric)
        return Headline(str(lhs), s) if s is not None else None

    @property
    def setting_result(self) -> tuple[Published | None, Headline | None]:
        """The published number the leaderboard shows, and ours beside it: the first published
        number with a full-tier result, else the headline number alone. A mini number never
        stands here: the mini tier runs another task at another scale."""
        for pub in self.spec.published:
            ours = self.ours_for(pub)
            if ours is not None:
                return pub, ours
        return self.published, None

    def claim(self, tier: str = "mini") -> Claim | None:
        view = self.tiers[tier]
        if view.tier is None or not view.tier.targets:
            return None
        target, result = view.tier.targets[0], view.status.targets[0]
        verdict = ("met" if result.met else "not-met") if view.display in DECIDED else "pending"
        lhs, _, rhs = target.parsed
        return Claim(target, result, verdict, _estimate(target, view.status.records), rhs.const is None)


def _estimate(target: Target, records: list[Record]) -> Summary | None:
    """The left side's mean over the counted seeds, or its paired difference with the right side's
    arm, with the 95% bootstrap CI: what the target is tested on."""
    lhs, _, rhs = target.parsed
    values = metric_values(records)
    reads = list(dict.fromkeys(lhs.reads() + rhs.reads()))
    if any(key not in values for key in reads):
        return None
    seeds = sorted(set.intersection(*(set(values[key]) for key in reads)))
    if not seeds:
        return None
    left = term_values(lhs, values, seeds)
    if rhs.const is not None:
        return summarize(left.tolist())
    return summarize((left - term_values(rhs, values, seeds)).tolist())


def load_runs(spec: Spec, tier: str, results: Path) -> tuple[list[RunFile], list[RecordError]]:
    """The tier's readable records (none through a link), and an error for each malformed one."""
    runs, unreadable = [], []
    for path in record_files(spec.id, tier, results):
        try:
            runs.append(RunFile(path, load_record(path)))
        except RecordError as e:
            unreadable.append(e)
    for run in runs:
        if (run.record.paper, run.record.tier) != (spec.id, tier):
            raise RecordError(f"{run.path}: field 'paper'/'tier': the record says "
                              f"{run.record.paper}/{run.record.tier}, its folder {spec.id}/{tier}")
    return runs, unreadable


def collect_paper(spec: Spec, results: Path) -> Paper:
    tiers = {}
    for name in TIER_NAMES:
        runs, unreadable = load_runs(spec, name, results)
        status = tier_status(spec, name, [r.record for r in runs])
        tiers[name] = TierView(name, spec.tiers.get(name), status, runs, unreadable)
    return Paper(spec, tiers)


def collect(specs: list[Spec], results: Path) -> list[Paper]:
    known = {s.id for s in specs}
    for path in record_files(results=results):
        if path.parent.parent.name not in known:
            raise RecordError(f"{path}: field 'paper': no spec for paper {path.parent.parent.name!r}")
        if path.parent.name not in TIER_NAMES:
            raise RecordError(f"{path}: field 'tier': {path.parent.name!r} is not one of {', '.join(TIER_NAMES)}")
    return [collect_paper(s, results) for s in specs]
