"""Specs and run records -> what the site shows of each paper: per tier, the status and its evidence.

Statuses come from `evals.status.tier_status`, never typed. The site adds one of its own: a tier
is *stale* when it has stale records and no current ones (the code or spec changed since every
run), so a reader sees that runs exist but no longer count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


from evals.record import IMAGE_MAGIC, Record, RecordError, load_record
from evals.spec import TIER_NAMES, Published, Spec, Tier, load_spec_file, with_checked_links
from evals.stats import Summary
from evals.status import TierStatus, tier_status

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
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES)


@dataclass
class TierView:
    name: str
    tier: Tier | None
    status: TierStatus
    runs: list[RunFile] = field(default_factory=list)

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
        return "superseded by a newer run"


@dataclass
class Headline:
    """Our number shown beside the paper's headline number on the leaderboard."""

    tier: str
    term: str
    summary: Summary


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

    def target_for(self, pub: Published):
        """The full tier's target at a published number's own setting: on the same metric, with the
        published value as its bound (a full tier's targets are the paper's numbers)."""
        view = self.tiers["full"]
        for target in view.tier.targets if view.tier is not None else []:
            lhs, _, rhs = target.parsed
            if lhs.metric == pub.metric and rhs.const == pub.value:
                return target
        return None

    def ours_for(self, pub: Published) -> Headline | None:
        target = self.target_for(pub)
        if target is None:
            return None
        lhs = target.parsed[0]
        s = self.tiers["full"].status.arms.get(lhs.arm, {}).get(lhs.metric)
        return Headline("full", str(lhs), s) if s is not None else None

    @property
    def headline(self) -> Headline | None:
        """At the paper's headline setting when we have runs there, else the mini tier's first
        claim (labelled with its tier on the site, never passed off as the paper's setting)."""
        pub = self.published
        ours = self.ours_for(pub) if pub is not None else None
        if ours is not None:
            return ours
        view = self.tiers["mini"]
        if view.tier is None or not view.tier.targets:
            return None
        lhs, _, _ = view.tier.targets[0].parsed
        s = view.status.arms.get(lhs.arm, {}).get(lhs.metric)
        return Headline("mini", str(lhs), s) if s is not None else None


def load_runs(spec: Spec, tier: str, results: Path) -> list[RunFile]:
    runs = [RunFile(p, load_record(p)) for p in sorted((results / spec.id / tier).glob("*.json"))]
    for run in runs:
        if (run.record.paper, run.record.tier) != (spec.id, tier):
            raise RecordError(f"{run.path}: field 'paper'/'tier': the record says "
                              f"{run.record.paper}/{run.record.tier}, its folder {spec.id}/{tier}")
    return runs


def collect_paper(spec: Spec, results: Path) -> Paper:
    tiers = {}
    for name in TIER_NAMES:
        runs = load_runs(spec, name, results)
        status = tier_status(spec, name, [r.record for r in runs])
        tiers[name] = TierView(name, spec.tiers.get(name), status, runs)
    return Paper(spec, tiers)


def collect(specs: list[Spec], results: Path) -> list[Paper]:
    known = {s.id for s in specs}
    for path in sorted(results.glob("*/*/*.json")):
        if path.parent.parent.name not in known:
            raise RecordError(f"{path}: field 'paper': no spec for paper {path.parent.parent.name!r}")
        if path.parent.name not in TIER_NAMES:
            raise RecordError(f"{path}: field 'tier': {path.parent.name!r} is not one of {', '.join(TIER_NAMES)}")
    return [collect_paper(s, results) for s in specs]
