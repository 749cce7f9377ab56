"""The site's tables as pandas DataFrames: one row per paper on the leaderboard, and a paper
page's published numbers, targets, per-arm summaries, cost and records."""

from __future__ import annotations

import math
from html import escape

import pandas as pd

from evals.spec import AREAS, TIER_NAMES, Published
from evals.stats import Summary
from leaderboard.collect import STATUS_RANK, Paper, TierView

AREA_TITLES = {
    "llm-backbone": "LLM backbone",
    "vision-multimodal": "Vision and multimodal",
    "generative": "Generative modelling",
    "alignment-reasoning": "Alignment and reasoning",
    "efficiency-systems": "Efficiency and systems",
    "reinforcement-learning": "Reinforcement learning",
}


def fmt(x: float) -> str:
    """Four significant digits, thousands separated, no exponent between 0.001 and 10 million."""
    a = abs(x)
    if a == 0 or not math.isfinite(x):
        return f"{x:g}"
    if not 1e-3 <= a < 1e7:
        return f"{x:.3e}"
    text = f"{x:,.{max(0, 3 - math.floor(math.log10(a)))}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_summary(s: Summary) -> str:
    return fmt(s.mean) if s.n == 1 else f"{fmt(s.mean)} [{fmt(s.ci_low)}, {fmt(s.ci_high)}]"


def fmt_value(value: float, unit: str | None, approximate: bool = False) -> str:
    return f"{'≈' if approximate else ''}{fmt(value)}{' ' + unit if unit else ''}"


def fmt_setting(setting: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items())


def leaderboard(papers: list[Paper]) -> pd.DataFrame:
    """One row per paper, in the areas' order, then by year."""
    rows = []
    for p in papers:
        s, pub, ours = p.spec, p.published, p.headline
        row = {"id": s.id, "title": s.title, "year": s.year, "area": s.area, "area_title": AREA_TITLES[s.area]}
        for name in TIER_NAMES:
            view = p.tiers[name]
            row[name] = view.display
            row[f"{name}_rank"] = STATUS_RANK[view.display]
        row["published"] = f"{fmt_value(pub.value, pub.unit, pub.approximate)} {pub.metric}" if pub else None
        row["published_value"] = pub.value if pub else None
        row["published_where"] = pub.where if pub else None
        row["ours"] = f"{fmt_summary(ours.summary)}" if ours else None
        row["ours_value"] = ours.summary.mean if ours else None
        row["ours_label"] = f"{ours.tier} · {ours.term}" if ours else None
        row["seeds"] = ours.summary.n if ours else 0
        row["newest"] = p.newest[:10] if p.newest else None
        rows.append(row)
    df = pd.DataFrame(rows)
    df["area_order"] = df["area"].map(AREAS.index)
    return df.sort_values(["area_order", "year", "id"], kind="stable").reset_index(drop=True)


def by_metric(paper: Paper) -> dict[str, list[Published]]:
    """The published numbers grouped by metric, in the spec's order."""
    groups: dict[str, list[Published]] = {}
    for pub in paper.spec.published:
        groups.setdefault(pub.metric, []).append(pub)
    return groups


def common_setting(pubs: list[Published]) -> dict:
    """The setting all of several numbers share: said once, above their table."""
    if len(pubs) < 2:
        return {}
    first, rest = pubs[0].setting, [p.setting for p in pubs[1:]]
    return {k: v for k, v in first.items() if all(k in s and s[k] == v for s in rest)}


def published(paper: Paper, pubs: list[Published]) -> pd.DataFrame:
    common = common_setting(pubs)
    rows = []
    for pub in pubs:
        ours = paper.ours_for(pub)
        rows.append({
            "published": fmt_value(pub.value, pub.unit, pub.approximate),
            "ours (full tier)": (f"{fmt_summary(ours.summary)} ({ours.summary.n} seeds)" if ours else
                                 "no run yet" if paper.target_for(pub) else "no target at this number"),
            "where": pub.where,
            "setting": fmt_setting({k: v for k, v in pub.setting.items() if k not in common}),
            "note": pub.note or "",
        })
    return pd.DataFrame(rows)


def references(paper: Paper) -> pd.DataFrame:
    return pd.DataFrame([{
        "reproduction": f"[{r.name}]({r.url})" if r.url else r.name,
        "metric": r.metric, "value": fmt_value(r.value, r.unit),
        "where": r.where or "", "setting": fmt_setting(r.setting),
    } for r in paper.spec.references])


def targets(view: TierView) -> pd.DataFrame:
    """Each target's result; while the tier still lacks seeds (status `implemented`), an unmet
    target is pending, not failed."""
    specs = view.tier.targets if view.tier else []
    pending = view.display in ("implemented", "stale")
    rows = []
    for spec, t in zip(specs, view.status.targets):
        result = ('<span class="rp-pass">✓ met</span>' if t.met else
                  '<span class="rp-pending">… pending</span>' if pending else '<span class="rp-fail">✗ not met</span>')
        rows.append({"target": f"`{t.expr}`", "test": t.test, "result": result, "evidence": t.detail,
                     "what it shows": spec.description or ""})
    return pd.DataFrame(rows)


def arms(view: TierView) -> pd.DataFrame:
    """Per arm and metric: mean and 95% bootstrap CI over the counted seeds."""
    rows = []
    for arm, metrics in view.status.arms.items():
        seeds = sorted(r.seed for r in view.status.records if r.arm == arm and r.status == "ok")
        for metric, s in metrics.items():
            rows.append({"arm": arm, "metric": metric, "seeds": ", ".join(map(str, seeds)), "mean": fmt(s.mean),
                         "95% CI": f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]" if s.n > 1 else "one seed: none",
                         "std": fmt(s.std)})
    return pd.DataFrame(rows)


def cost(view: TierView) -> pd.DataFrame:
    """Wall time of the counted runs per arm, with the hardware they ran on."""
    rows = []
    for arm in dict.fromkeys(r.arm for r in view.status.records):
        recs = [r for r in view.status.records if r.arm == arm]
        hw = sorted({_hardware(r.provenance.hardware) for r in recs})
        wall = [r.provenance.wall_time_s for r in recs]
        rows.append({"arm": arm, "runs": len(recs),
                     "wall time per run": _duration(sum(wall) / len(wall)),
                     "train / eval per run": f"{_duration(sum(r.provenance.train_time_s for r in recs) / len(recs))} / "
                                            f"{_duration(sum(r.provenance.eval_time_s for r in recs) / len(recs))}",
                     "total": _duration(sum(wall)), "hardware": "; ".join(hw)})
    return pd.DataFrame(rows)


def records(view: TierView, link) -> pd.DataFrame:
    """Every record of the tier, newest first, with why it counts or not, as HTML-escaped cells;
    `link(run)` gives the record's URL relative to the page."""
    runs = sorted(view.runs, key=lambda r: r.record.provenance.finished_at, reverse=True)
    return pd.DataFrame([{
        "record": f'<a href="{escape(link(r))}">{escape(r.record.run_id)}</a>',
        "arm": escape(r.record.arm), "seed": r.record.seed, "status": r.record.status,
        "counts?": escape(view.role(r.record)),
        "finished": r.record.provenance.finished_at.replace("T", " ")[:16],
        "wall": _duration(r.record.provenance.wall_time_s),
        "code": _code(r.record.provenance),
    } for r in runs])


def _code(p) -> str:
    """The revision a record was made at, and the newest that recertified it (its numbers re-executed
    bit for bit by that revision's code)."""
    out = escape((p.git_revision or "?")[:8]) + (" (dirty)" if p.git_dirty else "")
    if p.recertified:
        out += f", recertified at {escape(p.recertified[-1].revision[:8])}"
    return out


def _hardware(hw: dict) -> str:
    parts = [str(hw.get("gpu") or hw.get("cpu") or "unknown hardware")]
    if hw.get("cpu_count"):
        parts.append(f"{hw['cpu_count']} CPU cores")
    if hw.get("device"):
        parts.append(f"device {hw['device']}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def markdown(df: pd.DataFrame, empty: str = "*(none)*") -> str:
    """A DataFrame as a Markdown table; `|` inside cells escaped so it cannot split a cell."""
    if df.empty:
        return empty

    def row(values) -> str:
        return "| " + " | ".join(str(v).replace("|", r"\|").replace("\n", " ") for v in values) + " |"

    return "\n".join([row(df.columns), "|" + "---|" * len(df.columns), *(row(r) for r in df.itertuples(index=False))])


def html(df: pd.DataFrame) -> str:
    """A DataFrame as an HTML table of already-escaped cells, for long tables (every run record):
    passed through Markdown untouched, so thousands of rows cost nothing to render."""
    head = "".join(f"<th>{c}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in r) + "</tr>" for r in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
