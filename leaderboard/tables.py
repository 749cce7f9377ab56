"""The site's tables as pandas DataFrames: one row per paper on the leaderboard, and a paper
page's published numbers, targets, per-arm summaries, cost and records."""

from __future__ import annotations

import math
import re
from html import escape

import pandas as pd

from evals.spec import AREAS, TIER_NAMES, Published, Target
from evals.stats import Summary
from leaderboard.collect import DECIDED, STATUS_RANK, Claim, Paper, TierView

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
    """One row per paper, in the areas' order, then by year. Two groups of columns that are never
    mixed: the claim at CPU scale (the mini tier's first target, its verdict and CI) and the paper's
    setting (the published number, ours there from the full tier, and the gap), the latter empty
    until a full-tier run counts."""
    rows = []
    for p in papers:
        s = p.spec
        row = {"id": s.id, "title": s.title, "year": s.year, "area": s.area, "area_title": AREA_TITLES[s.area]}
        for name in TIER_NAMES:
            view = p.tiers[name]
            row[name] = view.display
            row[f"{name}_rank"] = STATUS_RANK[view.display]
        row |= _claim_columns(p)
        row |= _setting_columns(p)
        row["newest"] = p.newest[:10] if p.newest else None
        rows.append(row)
    df = pd.DataFrame(rows)
    df["area_order"] = df["area"].map(AREAS.index)
    return df.sort_values(["area_order", "year", "id"], kind="stable").reset_index(drop=True)


def _claim_columns(paper: Paper) -> dict:
    claim, view = paper.claim("mini"), paper.tiers["mini"]
    targets = view.status.targets
    return {
        "claim": claim.words if claim else None,
        "claim_expr": claim.target.expr if claim else None,
        "claim_verdict": claim.verdict if claim else None,
        "claim_estimate": fmt_estimate(claim) if claim and claim.estimate else None,
        "targets_met": view.status.targets_met if view.display in DECIDED else None,
        "targets_total": len(targets),
    }


def _setting_columns(paper: Paper) -> dict:
    pub, ours = paper.setting_result
    gap = ours.summary.mean - pub.value if ours else None
    return {
        "published": f"{fmt_value(pub.value, pub.unit, pub.approximate)} {pub.metric}" if pub else None,
        "published_metric": pub.metric if pub else None,
        "published_where": pub.where if pub else None,
        "ours": fmt_summary(ours.summary) if ours else None,
        "ours_term": ours.term if ours else None,
        "seeds": ours.summary.n if ours else 0,
        "gap": gap,
        "gap_relative": gap / abs(pub.value) if ours and pub.value else None,
        "gap_better": (gap >= 0) == pub.higher_is_better if ours else None,
    }


def fmt_estimate(claim: Claim) -> str:
    """`difference -0.28 [-0.29, -0.27]`, or `mean 486 [481, 490]`: what the target is tested on."""
    what = "difference" if claim.difference else "mean"
    return f"{what} {fmt_summary(claim.estimate)}"


def fmt_gap(gap: float, relative: float | None) -> str:
    sign = "+" if gap > 0 else ""
    return f"{sign}{fmt(gap)}" + (f" ({relative:+.0%})" if relative is not None else "")


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


OPERATORS = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}


def prose(text: str) -> str:
    """A spec's or record's text for a Markdown page: HTML-escaped outside its `code spans`, which
    Markdown escapes itself, so that no string from a spec or record becomes markup."""
    return "".join(part if part.startswith("`") else escape(part, quote=False)
                   for part in re.split(r"(`+[^`]*`+)", text))


def code(text: str) -> str:
    """A spec's or record's string as inline code, escaped (a backtick in it cannot end the span)."""
    return f"<code>{escape(text)}</code>"


def target_bound(target: Target) -> str:
    """`≥ 13,500`, linked to the full tier's section, with the expression as its tooltip."""
    _, op, rhs = target.parsed
    return f'<a href="#full" title="{escape(target.expr)}">{escape(OPERATORS[op])} {fmt(rhs.const)}</a>'


def published(paper: Paper, pubs: list[Published]) -> pd.DataFrame:
    """The published numbers of one metric, each with the full tier's target at its setting (blank
    where none is set; no column when the paper has none) and, once the full tier has counted runs,
    our result."""
    common = common_setting(pubs)
    with_target = any(paper.target_for(pub) for pub in paper.spec.published)
    with_ours = any(paper.ours_for(pub) for pub in paper.spec.published)
    rows = []
    for pub in pubs:
        target, ours = paper.target_for(pub), paper.ours_for(pub)
        row = {"published": escape(fmt_value(pub.value, pub.unit, pub.approximate))}
        if with_target:
            row["full-tier target"] = target_bound(target) if target else ""
        if with_ours:
            row["ours (full tier)"] = f"{fmt_summary(ours.summary)} ({ours.summary.n} seeds)" if ours else ""
        rows.append(row | {
            "where": prose(pub.where),
            "setting": prose(fmt_setting({k: v for k, v in pub.setting.items() if k not in common})),
            "note": prose(pub.note or ""),
        })
    return pd.DataFrame(rows)


def references(paper: Paper) -> pd.DataFrame:
    return pd.DataFrame([{
        "reproduction": f'<a href="{escape(r.url)}">{escape(r.name)}</a>' if r.url else escape(r.name),
        "metric": escape(r.metric), "value": escape(fmt_value(r.value, r.unit)),
        "where": prose(r.where or ""), "setting": prose(fmt_setting(r.setting)),
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
        rows.append({"target": code(t.expr), "test": t.test, "result": result, "evidence": escape(t.detail),
                     "what it shows": prose(spec.description or "")})
    return pd.DataFrame(rows)


def arms(view: TierView) -> pd.DataFrame:
    """Per arm and metric: mean and 95% bootstrap CI over the counted seeds."""
    rows = []
    for arm, metrics in view.status.arms.items():
        seeds = sorted(r.seed for r in view.status.records if r.arm == arm and r.status == "ok")
        for metric, s in metrics.items():
            rows.append({"arm": escape(arm), "metric": escape(metric), "seeds": ", ".join(map(str, seeds)), "mean": fmt(s.mean),
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
        rows.append({"arm": escape(arm), "runs": len(recs),
                     "wall time per run": _duration(sum(wall) / len(wall)),
                     "train / eval per run": f"{_duration(sum(r.provenance.train_time_s for r in recs) / len(recs))} / "
                                            f"{_duration(sum(r.provenance.eval_time_s for r in recs) / len(recs))}",
                     "total": _duration(sum(wall)), "hardware": escape("; ".join(hw))})
    return pd.DataFrame(rows)


def records(view: TierView, link) -> pd.DataFrame:
    """Every record of the tier, newest first, with why it counts or not, as HTML-escaped cells;
    `link(run)` gives the record's URL relative to the page."""
    runs = sorted(view.runs, key=lambda r: r.record.provenance.finished_at, reverse=True)
    return pd.DataFrame([{
        "record": f'<a href="{escape(link(r))}">{escape(r.record.run_id)}</a>',
        "arm": escape(r.record.arm), "seed": r.record.seed, "status": escape(r.record.status),
        "counts?": escape(view.role(r.record)),
        "finished": r.record.provenance.finished_at.replace("T", " ")[:16],
        "wall": _duration(r.record.provenance.wall_time_s),
        "code": _code(r.record.provenance),
    } for r in runs])


def _code(p) -> str:
    """The revision a record was made at, and the newest that recertified it (its numbers re-executed
    bit for bit by that revision's code)."""
    dirty = ' <abbr title="the working tree had uncommitted changes when the run was made">(dirty)</abbr>'
    out = escape((p.git_revision or "?")[:8]) + (dirty if p.git_dirty else "")
    if p.recertified:
        out += f", recertified at {escape(p.recertified[-1].revision[:8])}"
    return out


def _hardware(hw: dict) -> str:
    """The GPU (with the count, when several) a run used, else its CPU; then the CPU cores and device."""
    gpus = int(hw.get("gpu_count") or 1)
    parts = [f"{gpus} × {hw['gpu']}" if hw.get("gpu") and gpus > 1 else
             str(hw.get("gpu") or hw.get("cpu") or "unknown hardware")]
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
