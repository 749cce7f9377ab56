"""Markdown of the generated pages: the leaderboard, a paper (one template for all), the areas,
the curriculum graph and the navigation."""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

import pandas as pd
import yaml

from evals.spec import AREAS, TIER_NAMES, Spec
from leaderboard import tables
from leaderboard.collect import STATUS_LABELS, Paper, RunFile, TierView
from leaderboard.command import reproduce_command
from leaderboard.curves import CurvePlot
from leaderboard.links import repository_links
from leaderboard.tables import AREA_TITLES

README_SECTION = "Implementation details that differ from the paper"
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
def _cell(value, sort=None, html: str | None = None) -> str:
    attr = f' data-sort="{escape(str(sort))}"' if sort is not None else ""
    return f"<td{attr}>{html if html is not None else escape(str(value))}</td>"


def home(papers: list[Paper]) -> str:
    df = tables.leaderboard(papers)
    mini, full = df["mini"], df["full"]
    head = ["Paper", "smoke", "mini", "full", "Published", "Ours", "Seeds", "Newest run"]
    kinds = ["text", "number", "number", "number", "number", "number", "number", "text"]
    lines = [
        "---", "title: Leaderboard", "hide: [navigation, toc]", "---", "",
        "# Landmark ML papers, reproduced and checked", "",
        f"{len(df)} papers in {df['area'].nunique()} areas. Mini tier (minutes on a CPU, offline): "
        f"{(mini != 'not-implemented').sum()} implemented, {(mini == 'reproduced').sum()} reproduced. "
        f"Full tier (the paper's own setting): {(full == 'reproduced').sum()} reproduced. "
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
        '<div class="rp-scroll">', '<table id="leaderboard">',
        "<thead><tr>" + "".join(f'<th data-kind="{k}" title="Sort by {h}">{h}</th>' for h, k in zip(head, kinds))
        + "</tr></thead>",
    ]
    for area, group in df.groupby("area_order", sort=True):
        a = AREAS[area]
        lines.append(f'<tbody data-area="{a}">')
        lines.append(f'<tr class="rp-area"><th colspan="{len(head)}"><a href="areas/{a}/">{AREA_TITLES[a]}</a></th></tr>')
        for row in group.itertuples():
            statuses = " ".join(sorted({getattr(row, t) for t in TIER_NAMES}))
            text = " ".join(str(x) for x in (row.id, row.title, row.year, row.area_title, row.published, row.ours_label)
                            if not pd.isna(x))
            cells = [_cell(row.title, row.title, f'<a class="rp-paper" href="papers/{row.id}/">{escape(row.title)}</a>'
                           f'<br><span class="rp-sub"><code>{row.id}</code> · {row.year}</span>')]
            cells += [_cell(None, getattr(row, f"{t}_rank"), badge(getattr(row, t))) for t in TIER_NAMES]
            cells.append(_cell(None, "" if pd.isna(row.published) else row.published_value,
                               '<span class="rp-none">none recorded</span>' if pd.isna(row.published) else
                               f'{escape(row.published)}<br><span class="rp-sub">{escape(row.published_where)}</span>'))
            cells.append(_cell(None, "" if pd.isna(row.ours) else row.ours_value,
                               '<span class="rp-none">no result</span>' if pd.isna(row.ours) else
                               f'<span class="rp-num">{escape(row.ours)}</span><br><span class="rp-sub">{escape(row.ours_label)}</span>'))
            cells.append(_cell(row.seeds or "—", row.seeds))
            newest = "" if pd.isna(row.newest) else row.newest
            cells.append(_cell(newest or "—", newest))
            lines.append(f'<tr data-paper="{row.id}" data-statuses="{statuses}" data-text="{escape(text.lower())}">'
                         + "".join(cells) + "</tr>")
        lines.append("</tbody>")
    lines += ["</table>", "</div>", "",
              '<p class="rp-legend">Click a column to sort (within each area). <b>Published</b>: the paper\'s headline '
              "number and where it stands. <b>Ours</b>: the mean over seeds "
              "and its 95% bootstrap confidence interval, at the paper's setting (<i>full</i>) when we have runs "
              "there, else the mini tier's first claim. <b>stale</b>: runs exist, but the code or spec changed "
              "since every one of them.</p>", ""]
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

    out += ["## What the paper claims", "", (s.summary or "*No summary in the spec yet.*").strip(), ""]
    out += ["## What we reproduce", ""]
    if not s.tiers:
        out += ["Not implemented yet: the spec has no tiers.", ""]
    for name in [t for t in TIER_ORDER if t in s.tiers]:
        tier = s.tiers[name]
        claims = [f"`{t.expr}`" + (f": {t.description}" if t.description else "") for t in tier.targets]
        out.append(f"- **[{name} tier](#{name})**: {len(tier.seeds)} seeds ({', '.join(map(str, tier.seeds))}), "
                   f"arms {', '.join(f'`{a}`' for a in tier.arms)}.")
        out += [f"    - {c}" for c in claims] or ["    - no targets: the runs are reported, nothing is claimed."]
    out.append("")

    out += ["## Published numbers", ""]
    if not s.published:
        out += ["*None recorded in the spec yet.*", ""]
    for metric, pubs in tables.by_metric(paper).items():
        common = tables.common_setting(pubs)
        shared = ("; " + "; ".join(f"{k}: {v}" for k, v in common.items())) if common else ""
        out += [f"**`{metric}`**{shared}.", "", '<div class="rp-published" markdown>', "",
                tables.markdown(tables.published(paper, pubs)), "", "</div>", ""]
    if s.references:
        out += ["Other reproductions' numbers (anchors, not the paper's):", "", tables.markdown(tables.references(paper)), ""]

    for name in TIER_ORDER:
        view = paper.tiers[name]
        if view.tier is not None:
            out += tier_section(paper, view, plots.get(name, []))

    out += [f"## {README_SECTION}", ""]
    out.append(readme.strip() if readme else f"*The paper's folder has no README section “{README_SECTION}” yet.*")
    out.append("")
    return "\n".join(out)


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
    if not view.runs:
        notes.append("No runs yet.")
    out += [indent(" ".join(notes)), ""]

    arms = pd.DataFrame([{"arm": f"`{a}`", "implementation": f"`{arm.module or paper.spec.module}`",
                          "config overrides": f"`{json.dumps(arm.config)}`" if arm.config else "",
                          "description": arm.description or ""} for a, arm in tier.arms.items()])
    config = yaml.safe_dump(tier.config, sort_keys=False).strip() if tier.config else "{}"
    out += ['??? note "Config and arms"', "", indent("```yaml\n" + config + "\n```"), "",
            indent(tables.markdown(arms)), ""]

    out += ["### Targets", "", tables.markdown(tables.targets(view), "*No targets: the runs are reported, nothing is claimed.*"), ""]
    if view.runs:
        out += results_sections(paper, view, plots)
    out += ["### Caveats", ""]
    for d in tier.deviations:
        out += ['!!! warning "Differs from the paper"', "", indent(d), ""]
    for (evaluator, version, protocol), arms_ in _protocols(view).items():
        lines = "\n".join(f"- **{k}**: {v}" for k, v in json.loads(protocol).items()) or "- (no protocol recorded)"
        out += [f'!!! info "Evaluation protocol: {evaluator} v{version} ({", ".join(arms_)})"', "", indent(lines), ""]
    if not tier.deviations and not _protocols(view):
        out += ["*No recorded protocol differences yet.*", ""]

    out += ["### Reproduce", "", "```bash", reproduce_command(paper.spec.id, view.name), "```", ""]
    if view.runs:
        # every record, collapsed; left out of the search index (run ids are no search terms)
        df = tables.records(view, lambda r: f"../../{record_url(r)}")
        out += ["### Run records", "",
                f'<details class="abstract" data-search-exclude><summary>{len(df)} record(s): each links to its JSON'
                f"</summary>{tables.html(df)}</details>", ""]
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

    samples = [(r, img) for r in view.runs if any(r.record is c for c in st.records) for img in r.samples]
    if samples or paper.spec.area == "generative":
        out += ["### Samples", ""]
        if not samples:
            out += ["*No run of this tier has saved sample images yet* (a run saves them beside its record, in "
                    f"`results/{paper.spec.id}/{view.name}/<run id>/`).", ""]
        else:
            out.append('<div class="rp-samples" markdown>')
            for r, img in samples:
                rel = f"../../results/{paper.spec.id}/{view.name}/{r.record.run_id}/{img.name}"
                out.append(f"![{r.record.arm}, seed {r.record.seed}: {img.stem}]({rel})")
            out += ["</div>", ""]

    out += ["### Cost", "", tables.markdown(tables.cost(view), "*No counted runs yet.*"), ""]
    return out


def _figures(tier: str, plots: list[CurvePlot]) -> list[str]:
    out = []
    for p in plots:
        alt = f"{p.curve}: " + ", ".join(f"{a} ({n} seeds)" for a, n in p.seeds.items())
        out += [f"![{alt}]({tier}-{p.slug}.png){{ .rp-curve }}", ""]
    return out


def _protocols(view: TierView) -> dict[tuple[str, int, str], list[str]]:
    """Each distinct recorded (evaluator, version, protocol), with the arms that used it."""
    out: dict[tuple[str, int, str], list[str]] = {}
    for r in view.status.records:
        for e in r.evaluations:
            key = (e.evaluator, e.version, json.dumps(e.protocol, sort_keys=True))
            if r.arm not in out.setdefault(key, []):
                out[key].append(r.arm)
    return out


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


def curriculum(papers: list[Paper]) -> str:
    lines = ["flowchart LR"]
    lines += [f'  {p.spec.id}["{p.spec.id}<br/>{p.spec.year}"]' for p in papers]
    for p in papers:
        lines += [f"  {b} --> {p.spec.id}" for b in p.spec.builds_on]
    for p in papers:
        lines.append(f'  click {p.spec.id} href "../papers/{p.spec.id}/" "{escape(p.spec.title)}"')
        lines.append(f"  class {p.spec.id} st_{p.tiers['mini'].display.replace('-', '_')}")
    for status, color in (("reproduced", "#c8e6c9"), ("partly_reproduced", "#ffe0b2"), ("not_reproduced", "#ffcdd2"),
                          ("implemented", "#bbdefb"), ("stale", "#e1bee7"), ("not_implemented", "#eeeeee")):
        lines.append(f"  classDef st_{status} fill:{color},stroke:#666,color:#000")
    edges = pd.DataFrame([{"paper": f"[{p.spec.id}]({paper_url(p.spec.id)})", "area": AREA_TITLES[p.spec.area],
                           "builds on": ", ".join(f"[{b}]({paper_url(b)})" for b in p.spec.builds_on) or "—",
                           "built on by": ", ".join(f"[{q.spec.id}]({paper_url(q.spec.id)})" for q in papers
                                                    if p.spec.id in q.spec.builds_on) or "—"} for p in papers])
    return "\n".join([
        "---", "hide: [navigation, toc]", "---", "",
        "# Curriculum", "",
        "Each arrow runs from a paper to one that builds on it (`builds_on` in its spec): the later paper "
        "imports the earlier one's code, never copies it. Colours give the mini tier's status; click a paper "
        "to open its page.", "",
        '<script src="../javascripts/mermaid.min.js"></script>', "",
        "```mermaid", *lines, "```", "",
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
