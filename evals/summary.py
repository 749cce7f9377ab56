"""The table `repro reproduce` prints when its runs end: each arm's metrics over seeds with 95%
bootstrap intervals, wall time per seed, failed seeds, and the tier's targets over every current
record (the runs of this invocation and the ones already in results/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evals.paths import ROOT
from evals.record import load_record, read_records
from evals.spec import get_tier, load_spec
from evals.status import evaluate_tier, tier_status


def table(rows: list[dict], empty: str = "(none)") -> str:
    if not rows:
        return empty
    return pd.DataFrame(rows).to_string(index=False)


def tier_summary(paper: str, tier: str, paths: list[Path]) -> str:
    spec = load_spec(paper)
    t = get_tier(spec, tier)
    records = [load_record(p) for p in paths]
    _, arms = evaluate_tier(t, records)
    # Targets may span arms this invocation did not run: test them over all current records.
    targets = tier_status(spec, tier, read_records(paper, tier, paths[0].parents[2] if paths else None)[0]).targets
    rows = []
    for arm in t.arms:
        recs = [r for r in records if r.arm == arm]
        if not recs:
            continue
        row = {"arm": arm, "seeds": ",".join(str(r.seed) for r in recs if r.status == "ok") or "-"}
        for metric, s in arms.get(arm, {}).items():
            if metric == "episode_length":
                continue
            row[metric] = f"{s.mean:.4g} [{s.ci_low:.4g}, {s.ci_high:.4g}]"
        row["wall s/seed"] = f"{sum(r.provenance.wall_time_s for r in recs) / len(recs):.0f}"
        bad = [f"seed {r.seed}: {r.status}" for r in recs if r.status != "ok"]
        if bad:
            row["problems"] = "; ".join(bad)
        rows.append(row)
    lines = ["", f"{paper} / {tier}: mean and 95% bootstrap CI over seeds", table(rows)]
    if targets:
        lines.append(f"targets over all current records of {paper}/{tier}:")
    for tr in targets:
        lines.append(f"{'MET    ' if tr.met else 'NOT MET'} {tr.expr} [{tr.test}]: {tr.detail}")
    lines.append("records: " + ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in paths))
    return "\n".join(lines)
