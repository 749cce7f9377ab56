"""Every generated file of the site, handed to a writer `(path inside the docs, text or bytes)`,
and the files the site serves as they are (records, sample images, Mermaid).

At build time the writer is mkdocs-gen-files' (`leaderboard/mkdocs_pages.py`), so nothing
generated lands in the source tree; tests pass their own writer. The files served as they are
join the build from where they lie (`leaderboard/mkdocs_hooks.py`): thousands of records are not
copied through a temporary folder first.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

from evals.spec import AREAS, Spec
from leaderboard import assets, pages
from leaderboard.collect import SAMPLE_SUFFIXES, Paper, collect
from leaderboard.curves import CurvePlot, tier_plots

Writer = Callable[[str, "str | bytes"], None]
PARALLEL_FROM = 8  # tiers with runs; below this, starting worker processes costs more than it saves


def generate(write: Writer, specs: list[Spec], results: Path, readmes: Path, repository_url: str = "",
             log: Callable[[str], None] = lambda msg: None) -> list[Paper]:
    """`readmes`: the folder holding each paper's `<id>/README.md`."""
    t0 = time.perf_counter()
    papers = collect(specs, results)
    log(f"{sum(len(p.runs) for p in papers)} records of {len(papers)} papers read in {time.perf_counter() - t0:.1f}s")
    write("index.md", pages.home(papers))
    write("SUMMARY.md", pages.summary(papers))
    write("curriculum.md", pages.curriculum(papers))
    for area in AREAS:
        write(pages.area_url(area), pages.area_page(area, pages.in_area(papers, area)))
    plots = draw_plots(papers)
    for paper in papers:
        write_paper(write, paper, plots.get(paper.spec.id, {}), readmes, repository_url)
    log(f"pages and plots written in {time.perf_counter() - t0:.1f}s")
    return papers


def draw_plots(papers: list[Paper]) -> dict[str, dict[str, list[CurvePlot]]]:
    """paper -> tier -> its learning-curve figures. The smoke tier checks the code path in seconds:
    its curves say nothing, so none is drawn. Drawing is most of a large build's time, so it runs
    in worker processes when there is enough of it. They are forked when this process has no
    other thread; when it has (`mkdocs serve`, a TensorBoard writer), forking could copy a lock
    held by another thread, so they start from a fork server instead."""
    jobs = [(p.spec.id, name, view.tier, view.status.records) for p in papers for name, view in p.tiers.items()
            if name != "smoke" and view.tier is not None and view.status.records]
    workers = min(os.cpu_count() or 1, 4)
    if workers > 1 and len(jobs) >= PARALLEL_FROM:
        start = "fork" if threading.active_count() == 1 else "forkserver"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start)) as pool:
            drawn = list(pool.map(tier_plots, [j[2] for j in jobs], [j[3] for j in jobs]))
    else:
        drawn = [tier_plots(tier, records) for _, _, tier, records in jobs]
    out: dict[str, dict[str, list[CurvePlot]]] = {}
    for (paper, name, _, _), figures in zip(jobs, drawn):
        out.setdefault(paper, {})[name] = figures
    return out


def write_paper(write: Writer, paper: Paper, plots: dict[str, list[CurvePlot]], readmes: Path,
                repository_url: str) -> None:
    pid = paper.spec.id
    for name, figures in plots.items():
        for p in figures:
            write(f"papers/{pid}/{name}-{p.slug}.png", p.png)
    readme = pages.readme_section(readmes / pid / "README.md", f"reproductions/{pid}", repository_url)
    write(f"papers/{pid}/index.md", pages.paper_page(paper, plots, readme))


def static_files(results: Path) -> dict[str, Path]:
    """Site path -> file: every record at its path under results/, the images a run saved beside
    its record (`<tier>/<run id>/`), and the site's copy of Mermaid (for the architecture page)."""
    out = {"javascripts/mermaid.min.js": assets.mermaid_js()}
    for record in sorted(results.glob("*/*/*.json")):
        out[f"results/{record.relative_to(results).as_posix()}"] = record
        samples = record.with_suffix("")
        if samples.is_dir():
            for img in sorted(samples.iterdir()):
                if img.suffix.lower() in SAMPLE_SUFFIXES:
                    out[f"results/{img.relative_to(results).as_posix()}"] = img
    return out
