"""Markdown of the generated pages: the leaderboard, a paper (one template for all), the areas,
the curriculum graph and the navigation."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path

import pandas as pd
import yaml

from evals.record import Record
from evals.spec import AREAS, TIER_NAMES, Spec
from leaderboard import tables
from leaderboard.collect import STATUS_LABELS, Paper, RunFile, TierView
from leaderboard.command import reproduce_command
from leaderboard.curves import CurvePlot
from leaderboard.links import repository_links
from leaderboard.tables import AREA_TITLES

README_SECTION = "Implementation details that differ from the paper"
GLOSSARY = (
    "A **tier** is a scale at which the paper is run: *smoke* only checks, in seconds, that the code runs "
    "end to end and claims nothing; *mini* tests the paper's claim on a task two CPU cores train in minutes; "
    "*full* is the paper's own setting, for a GPU. An **arm** is one variant run with the same seeds and budget "
    "as the others: our implementation, a library's, an ablation, or the method on another task. A **target** "
    "is a claim written as a condition on the arms' metrics, fixed before any run.")
EVIDENCE_NOTE = (
    "Evidence: a <i>mean</i> is over the counted seeds; a <i>difference</i> is the target's left side minus its "
    "right side, seed by seed (negative: the left side is lower). Under the bootstrap test a target is met when "
    "the whole 95% interval lies on the side the condition asks for.")
RECORDS_NOTE = (
    "<i>code</i>: the revision of the repository a run was made at; <i>(dirty)</i>: the working tree had "
    "uncommitted changes then, so the revision alone does not name the code that ran (the record's source hash "
    "does, for the paper's files). <i>recertified at</i>: a later revision whose code re-executed the run bit for bit.")
TIER_ORDER = ("mini", "full", "smoke")  # the tier the site reports for every paper first
ADMONITION = {"reproduced": "success", "partly-reproduced": "warning", "not-reproduced": "failure",
              "implemented": "info", "stale": "warning", "not-implemented": "abstract"}


def short_title(spec: Spec) -> str:
    head, sep, _ = spec.title.partition(":")
    return head if sep else spec.title


def paper_url(paper_id: str) -> str:
    return f"papers/{paper_id}/index.md"


def record_url(run: RunFile) -> str:
    r = run.record
    return f"results/{r.paper}/{r.tier}/{r.run_id}.json"


def badge(status: str) -> str:
    return f'<span class="rp-status rp-{status}">{STATUS_LABELS[status]}</span>'


def indent(text: str, n: int = 4) -> str:
    return "\n".join((" " * n + line) if line.strip() else "" for line in text.splitlines())


# -- the leaderboard ----------------------------------------------------------------------------
VERDICT_MARKS = {"met": '<span class="rp-pass" title="target met">✓</span>',
                 "not-met": '<span class="rp-fail" title="target not met">✗</span>',
                 "pending": '<span class="rp-pending" title="not decided: seeds missing, or the records are stale">…</span>'}


@dataclass(frozen=True)
class Column:
    head: str
    kind: str | None   # how the column sorts: text, number, or None (not sortable: its values mix units)
    label: str         # what a phone shows before the cell, where the table becomes one card per paper
    group: str | None = None


HOME_COLUMNS = (
    Column("Paper", "text", ""),
    Column("Verdict", "number", "mini tier", "claim"),
    Column("Claim", "text", "claim", "claim"),
    Column("Targets met", "number", "targets met", "claim"),
    Column("Published", "text", "paper's setting", "setting"),
    Column("Ours (full tier)", None, "ours, full tier", "setting"),
    Column("Gap", "number", "gap", "setting"),
    Column("Newest run", "text", "newest run"),
)
COLUMN = {c.head: c for c in HOME_COLUMNS}
GROUPS = {"claim": ("Claim at CPU scale (mini tier)", "the paper's claim tested on a task a 2-core CPU "
                    "trains in minutes: its verdict, our estimate and its 95% CI"),
          "setting": ("The paper's setting", "the paper's number in its own setting, and ours there from "
                      "the full tier: empty until a full-tier run counts")}


def _cell(column: Column, html: str, sort=None, empty: bool = False) -> str:
    attrs = f' data-label="{escape(column.label)}"' if column.label else ""
    if sort is not None:
        attrs += f' data-sort="{escape(str(sort))}"'
    if empty:
        attrs += ' class="rp-empty"'
    return f"<td{attrs}>{html}</td>"


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value))


def _home_head() -> list[str]:
    """Two header rows: the groups, then the columns; a sortable column names its index."""
    top, bottom, group = [], [], None
    for i, c in enumerate(HOME_COLUMNS):
        sort = f' data-kind="{c.kind}" data-col="{i}" title="Sort by {escape(c.head)}"' if c.kind else ""
        if c.group is None:
            top.append(f'<th rowspan="2"{sort}>{c.head}</th>')
        elif c.group != group:
            title, why = GROUPS[c.group]
            span = sum(1 for x in HOME_COLUMNS if x.group == c.group)
            top.append(f'<th colspan="{span}" class="rp-group" title="{escape(why)}">{title}</th>')
        if c.group is not None:
            bottom.append(f"<th{sort}>{c.head}</th>")
        group = c.group
    return ["<thead>", "<tr>" + "".join(top) + "</tr>", "<tr>" + "".join(bottom) + "</tr>", "</thead>"]


def _home_row(row) -> str:
    c = COLUMN
    paper = (f'<a class="rp-paper" href="papers/{row.id}/">{escape(row.title)}</a>'
             f'<br><span class="rp-sub"><code>{escape(row.id)}</code> · {row.year}</span>')
    verdict = f'<a href="papers/{row.id}/#mini">{badge(row.mini)}</a>' if row.mini != "not-implemented" else badge(row.mini)
    cells = [_cell(c["Paper"], paper, row.title), _cell(c["Verdict"], verdict, row.mini_rank)]
    if _present(row.claim):
        numbers = (f'<span class="rp-num">{escape(row.claim_estimate)}</span> ' if _present(row.claim_estimate) else "")
        claim = (f'{escape(row.claim)}<br><span class="rp-sub"><code>{escape(row.claim_expr)}</code></span><br>'
                 f'{numbers}{VERDICT_MARKS[row.claim_verdict]}')
        cells.append(_cell(c["Claim"], claim, row.claim))
        met = "–" if not _present(row.targets_met) else int(row.targets_met)
        cells.append(_cell(c["Targets met"], f"{met} / {row.targets_total}",
                           row.targets_met / row.targets_total if _present(row.targets_met) else None))
    else:
        cells += [_cell(c["Claim"], "", empty=True), _cell(c["Targets met"], "", empty=True)]
    cells.append(_cell(c["Published"], f'{escape(row.published)}<br><span class="rp-sub">{escape(row.published_where)}</span>',
                       row.published_metric) if _present(row.published) else _cell(c["Published"], "", empty=True))
    if _present(row.ours):
        cells.append(_cell(c["Ours (full tier)"], f'<span class="rp-num">{escape(row.ours)}</span><br>'
                           f'<span class="rp-sub">{escape(row.ours_term)}, {int(row.seeds)} seeds</span>'))
        better = "rp-pass" if row.gap_better else "rp-fail"
        rel = row.gap_relative if _present(row.gap_relative) else None
        cells.append(_cell(c["Gap"], f'<span class="{better}">{escape(tables.fmt_gap(row.gap, rel))}</span>', rel))
    else:
        cells += [_cell(c["Ours (full tier)"], "", empty=True), _cell(c["Gap"], "", empty=True)]
    newest = row.newest if _present(row.newest) else ""
    cells.append(_cell(c["Newest run"], newest or "—", newest, empty=not newest))
    statuses = " ".join(sorted({getattr(row, t) for t in TIER_NAMES}))
    text = " ".join(str(x) for x in (row.id, row.title, row.year, row.area_title, row.published, row.claim,
                                     row.claim_expr) if _present(x))
    return (f'<tr data-paper="{escape(row.id)}" data-statuses="{statuses}" data-text="{escape(text.lower())}">'
            + "".join(cells) + "</tr>")


def home(papers: list[Paper]) -> str:
    df = tables.leaderboard(papers)
    mini, full = df["mini"], df["full"]
    lines = [
        "---", "title: Leaderboard", "hide: [navigation, toc]", "---", "",
        "# Landmark ML papers, reproduced and checked", "",
        f"{len(df)} papers in {df['area'].nunique()} areas. Mini tier (the paper's claim at CPU scale, minutes "
        f"per run, offline): {(mini != 'not-implemented').sum()} implemented, {(mini == 'reproduced').sum()} "
        f"reproduced. Full tier (the paper's own setting): {(full == 'reproduced').sum()} reproduced. "
        "Every status below is derived from the committed run records and the targets fixed in each "
        "paper's spec, never typed: see [Methodology](methodology.md).", "",
        '<div class="rp-controls">',
        '<input id="rp-filter" type="search" placeholder="Filter: title, id, metric…" aria-label="Filter papers">',
        '<select id="rp-area" aria-label="Area"><option value="">All areas</option>'
        + "".join(f'<option value="{a}">{AREA_TITLES[a]}</option>' for a in AREAS) + "</select>",
        '<select id="rp-status" aria-label="Status"><option value="">Any status</option>'
        + "".join(f'<option value="{s}">{label}</option>' for s, label in STATUS_LABELS.items()) + "</select>",
        '<span id="rp-count" aria-live="polite"></span>',
        "</div>",
        '<div class="rp-scroll">', '<table id="leaderboard">', *_home_head(),
    ]
    for area, group in df.groupby("area_order", sort=True):
        a = AREAS[area]
        lines.append(f'<tbody data-area="{a}">')
        lines.append(f'<tr class="rp-area"><th colspan="{len(HOME_COLUMNS)}"><a href="areas/{a}/">{AREA_TITLES[a]}</a></th></tr>')
        lines += [_home_row(row) for row in group.itertuples()]
        lines.append("</tbody>")
    lines += ["</table>", "</div>", "",
              '<p class="rp-legend">Click a column to sort (within each area). <b>Claim at CPU scale</b>: the mini '
              "tier's first target, a claim of the paper tested on a small task, with the verdict of the tier "
              "(its badge links to the tier on the paper's page), our estimate over seeds with its 95% bootstrap "
              "confidence interval (a <i>difference</i> is the left side minus the right, seed by seed) and whether "
              "the target is met (✓), not met (✗) or not decided yet (…). <b>The paper's setting</b>: the paper's "
              "headline number and where it stands, and ours at that setting from the full tier; the two groups "
              "are never mixed, so no mini number stands beside a published one. <b>stale</b>: runs exist, but "
              "the code or spec changed since every one of them.</p>", ""]
    return "\n".join(lines)


# -- a paper ------------------------------------------------------------------------------------
def paper_page(paper: Paper, plots: dict[str, list[CurvePlot]], readme: str | None) -> str:
    s = paper.spec
    authors = ", ".join(s.authors[:6]) + (" et al." if len(s.authors) > 6 else "")
    meta = [authors, str(s.year)]
    if s.arxiv:
        meta.append(f"[arXiv {s.arxiv}](https://arxiv.org/abs/{s.arxiv})")
    elif s.url:
        meta.append(f"[paper]({s.url})")
    meta.append(f"[{AREA_TITLES[s.area]}](../../{area_url(s.area)})")
    if s.builds_on:
        meta.append("builds on " + ", ".join(f"[{b}](../{b}/index.md)" for b in s.builds_on))
    out = [f"# {s.title}", "", " · ".join(meta), "{ .rp-meta }", "",
           " ".join(f"**{t}** {badge(paper.tiers[t].display)}" for t in TIER_NAMES), "{ .rp-badges }", ""]

    out += ["## What the paper claims", "", tables.prose(s.summary or "*No summary in the spec yet.*").strip(), ""]
    out += ["## What we reproduce", ""]
    if not s.tiers:
        out += ["Not implemented yet: the spec has no tiers.", ""]
    else:
        out += [GLOSSARY, ""]
    for name in [t for t in TIER_ORDER if t in s.tiers]:
        tier = s.tiers[name]
        claims = [tables.code(t.expr) + (f": {tables.prose(t.description)}" if t.description else "") for t in tier.targets]
        out.append(f"- **[{name} tier](#{name})**: {len(tier.seeds)} seeds ({', '.join(map(str, tier.seeds))}), "
                   f"arms {', '.join(tables.code(a) for a in tier.arms)}.")
        out += [f"    - {c}" for c in claims] or ["    - no targets: the runs are reported, nothing is claimed."]
    out.append("")

    out += ["## Published numbers", ""]
    if not s.published:
        out += ["*None recorded in the spec yet.*", ""]
    elif any(paper.target_for(pub) for pub in s.published):
        out += ["Each number with the full tier's target at its setting, where the spec sets one (a link to "
                "the [full tier](#full)); ours stands beside it once a full-tier run counts.", ""]
    for metric, pubs in tables.by_metric(paper).items():
        common = tables.common_setting(pubs)
        shared = tables.prose(("; " + "; ".join(f"{k}: {v}" for k, v in common.items())) if common else "")
        out += [f"**{tables.code(metric)}**{shared}.", "", '<div class="rp-published" markdown>', "",
                tables.markdown(tables.published(paper, pubs)), "", "</div>", ""]
    if s.references:
        out += ["Other reproductions' numbers (anchors, not the paper's):", "", tables.markdown(tables.references(paper)), ""]

    for name in TIER_ORDER:
        view = paper.tiers[name]
        if view.tier is not None:
            out += tier_section(paper, view, plots.get(name, []))

    if s.tiers:  # a paper without code has no implementation to differ
        out += [f"## {README_SECTION}", ""]
        out.append(readme.strip() if readme else f"*The paper's folder has no README section “{README_SECTION}” yet.*")
        out.append("")
    return "\n".join(out)


def _unreadable(error: Exception) -> str:
    """A malformed record's file name and what is wrong with it (a RecordError names the file first)."""
    path, _, why = str(error).partition(": ")
    return f"{tables.code(Path(path).name)}: {tables.prose(why)}"


def tier_section(paper: Paper, view: TierView, plots: list[CurvePlot]) -> list[str]:
    tier, st = view.tier, view.status
    out = [f"## {view.name.capitalize()} tier {{#{view.name}}}", ""]
    met = f"{st.targets_met} of {len(st.targets)} targets met" if st.targets else "no targets"
    seeds = f"seeds {', '.join(map(str, st.seeds))}" if st.seeds else "no counted seeds"
    out += [f'!!! {ADMONITION[view.display]} "{view.label.capitalize()}: {met}, {seeds}"', ""]
    notes = [f"The spec fixes seeds {', '.join(map(str, tier.seeds))}; "
             + (f"a target needs {tier.required_seeds} of them." if tier.targets
                else "the tier has no targets: its runs are reported, nothing is claimed.")]
    if view.display == "stale":
        notes.append(f"All {len(view.runs)} record(s) are stale, so none counts; rerun the tier.")
    elif st.stale:
        notes.append(f"{len(st.stale)} stale record(s) kept below, not counted.")
    if view.invalid:
        notes.append(f"{len(view.invalid)} counted seed(s) have an invalid evaluation: no result, to be run again.")
    if st.failed and len(st.failed) > len(view.invalid):
        notes.append(f"{len(st.failed) - len(view.invalid)} seed(s) failed (diverged) and fail the targets they touch.")
    if view.unreadable:
        notes.append(f"{len(view.unreadable)} record file(s) are invalid and left out: "
                     + "; ".join(_unreadable(e) for e in view.unreadable) + ".")
    if not view.runs:
        notes.append("No runs yet.")
    out += [indent(" ".join(notes)), ""]

    arms = pd.DataFrame([{"arm": tables.code(a), "implementation": tables.code(arm.module or paper.spec.module),
                          "config overrides": tables.code(json.dumps(arm.config)) if arm.config else "",
                          "description": tables.prose(arm.description or "")} for a, arm in tier.arms.items()])
    config = yaml.safe_dump(tier.config, sort_keys=False).strip() if tier.config else "{}"
    out += ['??? note "Config and arms"', "", indent("```yaml\n" + config + "\n```"), "",
            indent(tables.markdown(arms)), ""]

    out += ["### Targets", "", tables.markdown(tables.targets(view), "*No targets: the runs are reported, nothing is claimed.*"), ""]
    if any(t.test == "bootstrap" for t in tier.targets):
        out += [f'<p class="rp-legend">{EVIDENCE_NOTE}</p>', ""]
    if tier.superseded:
        old = pd.DataFrame([{"target": tables.code(t.expr) + (f": {tables.prose(t.description)}" if t.description else ""),
                             "counted under": f"spec v{t.spec_version}", "what it got": tables.prose(t.result),
                             "why it was replaced": tables.prose(t.reason)} for t in tier.superseded])
        out += ["### Superseded targets", "", "Targets this tier once had, kept with their result: each was replaced "
                "because it did not state the paper's claim or could not be met by construction, not because a "
                "run missed it. They no longer count.", "", tables.markdown(old), ""]
    if view.runs:
        out += results_sections(paper, view, plots)
    out += ["### Caveats", ""]
    for d in tier.deviations:
        out += ['!!! warning "Differs from the paper"', "", indent(tables.prose(d)), ""]
    protocols = _protocols(view)
    for (evaluator, version, protocol), runs in protocols.items():
        out += [protocol_box(evaluator, version, json.loads(protocol), runs), ""]
    if not tier.deviations and not protocols:
        out += ["*No recorded protocol differences yet.*", ""]

    out += ["### Reproduce", "", "```bash", reproduce_command(paper.spec.id, view.name), "```", ""]
    if view.runs:
        # every record, collapsed; left out of the search index (run ids are no search terms)
        df = tables.records(view, lambda r: f"../../{record_url(r)}")
        out += ["### Run records", "",
                f'<details class="abstract" data-search-exclude><summary>{len(df)} record(s): each links to its JSON'
                f'</summary>{tables.html(df)}<p class="rp-legend">{RECORDS_NOTE}</p></details>', ""]
    return out


def results_sections(paper: Paper, view: TierView, plots: list[CurvePlot]) -> list[str]:
    st = view.status
    out = ["### Results per arm", "", "Mean over the counted seeds and its 95% percentile-bootstrap "
            "confidence interval (seeds resampled, 10,000 times).", "",
            tables.markdown(tables.arms(view), "*No counted runs yet.*"), ""]

    sweeps, curves = [p for p in plots if p.kind == "sweep"], [p for p in plots if p.kind != "sweep"]
    if sweeps:
        out += ["### Sweeps", "", "The arms that vary one config field, as the metric against that field: mean over "
                "seeds, and its 95% bootstrap confidence interval as error bars.", ""]
        out += _figures(view.name, sweeps)
    if curves:
        out += ["### Learning curves", "", "Mean over seeds; the band is the 95% bootstrap confidence interval "
                "of the mean, on the span every seed covers. Left: by training step; right: by wall-clock time.", ""]
        out += _figures(view.name, curves)

    rank = arm_order(view)
    counted = sorted((r for r in view.runs if any(r.record is c for c in st.records)), key=lambda r: rank(r.record))
    samples = [(r, img) for r in counted for img in r.samples]  # the paper's method first, as the protocol boxes
    if samples or paper.spec.area == "generative":
        out += ["### Samples", ""]
        if not samples:
            out += ["*No run of this tier has saved sample images yet* (a run saves them beside its record, in "
                    f"`results/{paper.spec.id}/{view.name}/<run id>/`).", ""]
        else:
            out.append('<div class="rp-samples">')
            out += [sample_figure(paper.spec.id, view.name, r, img) for r, img in samples]
            out += ["</div>", ""]

    out += ["### Cost", "", tables.markdown(tables.cost(view), "*No counted runs yet.*"), ""]
    return out


def _figures(tier: str, plots: list[CurvePlot]) -> list[str]:
    """Each plot loaded when scrolled to, and a link to itself at full size (click to enlarge)."""
    out = []
    for p in plots:
        alt = f"{p.title}: " + ", ".join(f"{a} ({n} seeds)" for a, n in p.seeds.items())
        src = f"{tier}-{p.slug}.png"
        out += [f'<p><a class="rp-enlarge" href="{escape(src)}" title="Open at full size"><img class="rp-curve" '
                f'src="{escape(src)}" alt="{escape(alt)}" width="{p.width}" height="{p.height}" loading="lazy"></a></p>', ""]
    return out


def sample_figure(paper: str, tier: str, run: RunFile, img: Path) -> str:
    """A run's sample image with a caption saying whose it is."""
    r = run.record
    src = escape(f"../../results/{paper}/{tier}/{r.run_id}/{img.name}")
    caption = f"{r.arm}, seed {r.seed}: {img.stem.replace('_', ' ')}"
    return (f'<figure class="rp-sample"><a href="{src}" title="Open at full size"><img src="{src}" '
            f'alt="{escape(caption)}" loading="lazy"></a><figcaption>{escape(caption)}</figcaption></figure>')


PROTOCOL_EXAMPLES = 3   # items of a long list value shown on the page; the rest stay in the record
PROTOCOL_CHARS = 300    # a value longer than this, as JSON, is long


def _is_long(value) -> bool:
    return (isinstance(value, list) and len(value) > PROTOCOL_EXAMPLES) or len(json.dumps(value)) > PROTOCOL_CHARS


def _size(value) -> str:
    return f"{len(value)} items" if isinstance(value, (list, dict)) else f"{len(str(value)):,} characters"


def arm_order(view: TierView):
    """A sort key for a tier's records: the spec's arm order (by convention the paper's method
    first), then the seed."""
    order = list(view.tier.arms) if view.tier is not None else []
    return lambda r: (order.index(r.arm) if r.arm in order else len(order), r.seed)


def _protocols(view: TierView) -> dict[tuple[str, int, str], list[Record]]:
    """Each distinct recorded (evaluator, version, protocol), with the counted runs that used it. A
    long value (the sentences a run translated) is compared by its size only, so runs that differ
    only in what they produced share one box. Runs come in the spec's arm order, then by seed, so a
    long value's examples are the first arm's (by convention the paper's method), not an ablation's."""
    out: dict[tuple[str, int, str], list[Record]] = {}
    for r in sorted(view.status.records, key=arm_order(view)):
        for e in r.evaluations:
            shape = {k: {"long": _size(v)} if _is_long(v) else v for k, v in e.protocol.items()}
            out.setdefault((e.evaluator, e.version, json.dumps(shape, sort_keys=True)), []).append(r)
    return out


def _protocol_value(key: str, value, runs: list[Record], evaluator: str) -> str:
    """A protocol value as HTML: as recorded, or, when long, a few examples from the first run and
    where the rest lies."""
    if not (isinstance(value, dict) and set(value) == {"long"}):
        return escape(str(value))
    first = next(e.protocol[key] for e in runs[0].evaluations if e.evaluator == evaluator)
    examples = (" · ".join(escape(str(x)) for x in first[:PROTOCOL_EXAMPLES]) if isinstance(first, list)
                else escape(str(first)[:PROTOCOL_CHARS]) + "…")
    return (f"{escape(value['long'])} per run, in each run's record; from {escape(runs[0].run_id)}: "
            f"<i>{examples}</i>")


def protocol_box(evaluator: str, version: int, protocol: dict, runs: list[Record]) -> str:
    """The evaluation protocol the runs recorded, as an info box left out of the search index."""
    arms = ", ".join(dict.fromkeys(r.arm for r in runs))
    items = "".join(f"<li><b>{escape(k)}</b>: {_protocol_value(k, v, runs, evaluator)}</li>" for k, v in protocol.items())
    return (f'<div class="admonition info" data-search-exclude><p class="admonition-title">Evaluation protocol: '
            f'{escape(evaluator)} v{version} ({escape(arms)})</p><ul>{items or "<li>(no protocol recorded)</li>"}</ul></div>')


def readme_section(path: Path, base: str, repository_url: str = "") -> str | None:
    """The README's section on implementation details that differ from the paper, its links made
    safe for the site (`base`: the README's folder in the repository)."""
    if not path.is_file():
        return None
    text = path.read_text()
    m = re.search(rf"^(#+)\s+{re.escape(README_SECTION)}\s*$", text, re.M | re.I)
    if not m:
        return None
    rest = text[m.end():]
    end = re.search(rf"^#{{1,{len(m.group(1))}}}\s", rest, re.M)
    body = rest[: end.start()] if end else rest
    return repository_links(body.strip(), base, repository_url)


# -- areas, curriculum, navigation --------------------------------------------------------------
def in_area(papers: list[Paper], area: str) -> list[Paper]:
    """The area's papers, oldest first (the leaderboard's order)."""
    return sorted((p for p in papers if p.spec.area == area), key=lambda p: (p.spec.year, p.spec.id))


def area_url(area: str) -> str:
    return f"areas/{area}/index.md"


def area_page(area: str, papers: list[Paper]) -> str:
    """`papers`: the area's, in order. The page lies at `area_url(area)`."""
    rows = pd.DataFrame([{
        "paper": f"[{short_title(p.spec)}](../../{paper_url(p.spec.id)})",
        "year": str(p.spec.year),
        **{t: badge(p.tiers[t].display) for t in TIER_NAMES},
        "builds on": ", ".join(f"[{b}](../../{paper_url(b)})" for b in p.spec.builds_on) or "—",
    } for p in papers])
    out = [f"# {AREA_TITLES[area]}", "",
           f"{len(papers)} papers, oldest first. Status per tier, derived from the run records.", "",
           '<div class="rp-area-table" markdown>', "", tables.markdown(rows), "", "</div>", ""]
    for p in papers:
        out += [f"## [{p.spec.title}](../../{paper_url(p.spec.id)})", "",
                (p.spec.summary or "*No summary in the spec yet.*").strip(), ""]
    return "\n".join(out)


STATUS_FILL = {"reproduced": "#c8e6c9", "partly-reproduced": "#ffe0b2", "not-reproduced": "#ffcdd2",
               "implemented": "#bbdefb", "stale": "#e1bee7", "not-implemented": "#eeeeee"}
NODE_W, NODE_H, COL_GAP, ROW_GAP, LANE_PAD, LABEL_W, HEADER_H = 116, 38, 34, 8, 10, 170, 26


def _curriculum_layout(papers: list[Paper]) -> tuple[dict[str, tuple[int, int]], list[tuple[str, int, int]], int, int]:
    """Node positions, a column per year and a lane per area; the lanes as (area, top, height); the
    drawing's width and height."""
    years = sorted({p.spec.year for p in papers})
    x_of = {year: LABEL_W + i * (NODE_W + COL_GAP) for i, year in enumerate(years)}
    where, lanes, top = {}, [], HEADER_H
    for area in AREAS:
        stacks: dict[int, int] = {}
        for p in in_area(papers, area):
            k = stacks.get(p.spec.year, 0)
            stacks[p.spec.year] = k + 1
            where[p.spec.id] = (x_of[p.spec.year], top + LANE_PAD + k * (NODE_H + ROW_GAP))
        height = 2 * LANE_PAD + max(stacks.values(), default=1) * (NODE_H + ROW_GAP) - ROW_GAP
        lanes.append((area, top, height))
        top += height
    return where, lanes, LABEL_W + len(years) * (NODE_W + COL_GAP), top


def _edge(a: tuple[int, int], b: tuple[int, int]) -> str:
    """A curve from the earlier paper's box to the later one's: side to side across years, bottom to
    top within one year."""
    (x1, y1), (x2, y2) = a, b
    if x2 > x1:
        x1, y1, y2 = x1 + NODE_W, y1 + NODE_H // 2, y2 + NODE_H // 2
        return f"M{x1},{y1} C{x1 + COL_GAP},{y1} {x2 - COL_GAP},{y2} {x2},{y2}"
    x1, x2 = x1 + NODE_W // 2, x2 + NODE_W // 2
    return f"M{x1},{y1 + NODE_H} C{x1 + 40},{y1 + NODE_H + 30} {x2 + 40},{y2 - 30} {x2},{y2}"


def curriculum_svg(papers: list[Paper]) -> str:
    """The curriculum graph drawn at build time, as an inline SVG: no script, every paper a link."""
    where, lanes, width, height = _curriculum_layout(papers)
    years = sorted({p.spec.year for p in papers})
    out = [f'<svg class="rp-curriculum" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           'role="img" aria-label="Curriculum: which paper builds on which" xmlns="http://www.w3.org/2000/svg">',
           '<defs><marker id="rp-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>']
    for i, year in enumerate(years):
        x = LABEL_W + i * (NODE_W + COL_GAP) + NODE_W // 2
        out.append(f'<text class="rp-year" x="{x}" y="17" text-anchor="middle">{year}</text>')
    for area, top, h in lanes:
        out.append(f'<rect class="rp-lane" x="0" y="{top}" width="{width}" height="{h}"/>')
        out.append(f'<text class="rp-lane-label" x="8" y="{top + h // 2 + 5}">{AREA_TITLES[area]}</text>')
    for p in papers:
        for b in p.spec.builds_on:
            out.append(f'<path class="rp-edge" data-from="{escape(b)}" data-to="{escape(p.spec.id)}" '
                       f'd="{_edge(where[b], where[p.spec.id])}" marker-end="url(#rp-arrow)"/>')
    for p in papers:
        x, y = where[p.spec.id]
        status = p.tiers["mini"].display
        out.append(f'<a href="../papers/{escape(p.spec.id)}/"><title>{escape(p.spec.title)} ({p.spec.year}): mini tier '
                   f'{STATUS_LABELS[status]}</title><rect class="rp-node" x="{x}" y="{y}" width="{NODE_W}" '
                   f'height="{NODE_H}" rx="6" fill="{STATUS_FILL[status]}"/><text x="{x + NODE_W // 2}" y="{y + 16}" '
                   f'text-anchor="middle" class="rp-node-id">{escape(p.spec.id)}</text><text x="{x + NODE_W // 2}" '
                   f'y="{y + 30}" text-anchor="middle" class="rp-node-status">{STATUS_LABELS[status]}</text></a>')
    out.append("</svg>")
    return "".join(out)


def curriculum(papers: list[Paper]) -> str:
    edges = pd.DataFrame([{"paper": f"[{p.spec.id}]({paper_url(p.spec.id)})", "area": AREA_TITLES[p.spec.area],
                           "builds on": ", ".join(f"[{b}]({paper_url(b)})" for b in p.spec.builds_on) or "—",
                           "built on by": ", ".join(f"[{q.spec.id}]({paper_url(q.spec.id)})" for q in papers
                                                    if p.spec.id in q.spec.builds_on) or "—"} for p in papers])
    return "\n".join([
        "---", "hide: [navigation, toc]", "---", "",
        "# Curriculum", "",
        "Each arrow runs from a paper to one that builds on it (`builds_on` in its spec): the later paper "
        "imports the earlier one's code, never copies it. A column per year, a band per area; colours give "
        "the mini tier's status. Click a paper to open its page.", "",
        f'<div class="rp-scroll">{curriculum_svg(papers)}</div>', "",
        "## As a table", "", tables.markdown(edges), ""])


def summary(papers: list[Paper]) -> str:
    """The navigation (mkdocs-literate-nav)."""
    out = ["- [Leaderboard](index.md)", "- Areas"]
    for area in AREAS:
        out.append(f"    - [{AREA_TITLES[area]}]({area_url(area)})")
        out += [f"        - [{short_title(p.spec)}]({paper_url(p.spec.id)})" for p in in_area(papers, area)]
    out += ["- [Curriculum](curriculum.md)", "- [Methodology](methodology.md)", "- [Architecture](architecture.md)",
            "- [Contributing a run](contributing.md)"]
    return "\n".join(out) + "\n"
