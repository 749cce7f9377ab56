"""The leaderboard's data and pages from fixture records: statuses, numbers, tables, plots, the
command line, and the generated files."""

import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from evals.cli import build_parser
from evals.record import RecordError, write_record
from evals.paths import ROOT
from evals.spec import all_specs
from evals.stats import bootstrap_ci
from leaderboard import pages, tables
from leaderboard.collect import collect, collect_paper, load_specs
from leaderboard.command import MakefileError, reproduce_command
from leaderboard.curves import arm_groups, bootstrap_band, tier_plots
from leaderboard.generate import generate, static_files
from leaderboard.links import repository_links
from tests.fixtures.site.records import demo_spec, make_record, write_records, write_spec

MINI = [("ours", 1), ("ours", 2), ("ours", 3), ("baseline", 1), ("baseline", 2), ("baseline", 3)]


@pytest.fixture
def spec():
    return demo_spec()


def mini(results, spec, ours, baseline, **kw):
    values = {("ours", s): v for s, v in zip((1, 2, 3), ours)} | {("baseline", s): v for s, v in zip((1, 2, 3), baseline)}
    return write_records(results, spec, "mini", values, **kw)


def status(spec, results, tier="mini"):
    return collect_paper(spec, results).tiers[tier]


# -- statuses -----------------------------------------------------------------------------------
def test_reproduced_when_every_target_is_met(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    view = status(spec, tmp_path)
    assert view.display == "reproduced" and view.label == "reproduced"
    assert [t.met for t in view.status.targets] == [True, True]


def test_partly_reproduced_when_some_targets_are_met(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-100, -110, -90])  # clears the floor, loses to the baseline
    assert status(spec, tmp_path).display == "partly-reproduced"


def test_not_reproduced_when_no_target_is_met(tmp_path, spec):
    mini(tmp_path, spec, [-450, -460, -440], [-100, -110, -90])
    view = status(spec, tmp_path)
    assert view.display == "not-reproduced"
    assert "✗ not met" in tables.markdown(tables.targets(view))


def test_implemented_while_seeds_are_missing(tmp_path, spec):
    write_records(tmp_path, spec, "mini", {("ours", 1): -150.0, ("baseline", 1): -170.0})
    view = status(spec, tmp_path)
    assert view.display == "implemented"
    assert "pending" in tables.markdown(tables.targets(view))  # undecided, not failed


def test_not_implemented_without_the_tier(tmp_path, spec):
    stub = spec.model_copy(update={"tiers": {}})
    paper = collect_paper(stub, tmp_path)
    assert {t.display for t in paper.tiers.values()} == {"not-implemented"}
    assert paper.headline is None and paper.newest is None


def test_stale_when_only_stale_records(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160], stale=True)
    view = status(spec, tmp_path)
    assert view.status.status == "implemented"  # the harness's view: nothing counts
    assert view.display == "stale" and view.label == "stale"
    assert all(view.role(r.record).startswith("stale: the paper's source files changed") for r in view.runs)


def test_current_records_outrank_stale_ones(tmp_path, spec):
    mini(tmp_path, spec, [-450, -460, -440], [-100, -110, -90], stale=True, finished="2026-02-01T00:00:00+00:00")
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])  # older, but current
    view = status(spec, tmp_path)
    assert view.display == "reproduced" and len(view.status.stale) == 6


def test_invalid_run_is_no_result(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    write_record(make_record(spec, "mini", "ours", 3, None, status="invalid", finished="2026-01-02T00:00:00+00:00"), tmp_path)
    view = status(spec, tmp_path)
    # the newer invalid run replaces seed 3's result and is never read as a score
    assert view.display == "implemented"
    assert [r.seed for r in view.invalid] == [3]
    assert view.status.arms["ours"]["return"].n == 2
    roles = {(r.record.seed, r.record.status): view.role(r.record) for r in view.runs if r.record.arm == "ours"}
    assert roles[(3, "invalid")] == "invalid: no result"
    assert roles[(3, "ok")] == "superseded by a newer run"
    page = pages.paper_page(collect_paper(spec, tmp_path), {}, None)
    assert "1 counted seed(s) have an invalid evaluation" in page


def test_malformed_or_misplaced_records_fail_with_the_file(tmp_path, spec):
    bad = tmp_path / "demo" / "mini" / "broken.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{")
    with pytest.raises(RecordError, match="broken.json: not valid JSON"):
        collect([spec], tmp_path)
    bad.unlink()
    (tmp_path / "ghost" / "mini").mkdir(parents=True)
    (tmp_path / "ghost" / "mini" / "x.json").write_text("{}")
    with pytest.raises(RecordError, match="ghost/mini/x.json: field 'paper': no spec"):
        collect([spec], tmp_path)


# -- numbers ------------------------------------------------------------------------------------
def test_ci_numbers_over_seeds(tmp_path, spec):
    mini(tmp_path, spec, [-150, -162, -141], [-170, -180, -160])
    df = tables.arms(status(spec, tmp_path)).set_index(["arm", "metric"])
    row = df.loc[("ours", "return")]
    assert row["seeds"] == "1, 2, 3"
    assert row["mean"] == "-151"  # (-150 - 162 - 141) / 3
    # With 3 seeds, all three resampled to the lowest (or highest) has chance 1/27 > 2.5%: the
    # percentile interval's ends are the extreme seeds.
    assert row["95% CI"] == "[-162, -141]"
    assert row["std"] == f"{np.std([-150, -162, -141], ddof=1):.2f}"  # 10.54


@pytest.mark.parametrize("x,text", [(15000.0, "15,000"), (-145.12, "-145.1"), (200.0, "200"), (0.54444, "0.5444"),
                                    (1234567.0, "1,234,567"), (2.5e-5, "2.500e-05"), (0.0, "0")])
def test_number_format(x, text):
    assert tables.fmt(x) == text


def test_bootstrap_band_matches_the_harness_interval_point_by_point():
    y = np.random.default_rng(3).normal(size=(4, 30)).cumsum(axis=1)
    mean, lo, hi = bootstrap_band(y)
    ref = np.array([bootstrap_ci(y[:, j]) for j in range(y.shape[1])])
    np.testing.assert_allclose(mean, y.mean(axis=0))
    np.testing.assert_allclose(lo, ref[:, 0], rtol=1e-12)
    np.testing.assert_allclose(hi, ref[:, 1], rtol=1e-12)
    one = bootstrap_band(y[:1])
    np.testing.assert_array_equal(one[1], y[0])


def test_headline_beside_the_published_number(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    paper = collect_paper(spec, tmp_path)
    assert (paper.headline.tier, paper.headline.term, paper.headline.summary.mean) == ("mini", "return[ours]", -150)
    assert tables.published(paper, paper.spec.published).iloc[0]["ours (full tier)"] == "no run yet"
    write_records(tmp_path, spec, "full", {("ours", s): 4000.0 + s for s in (1, 2, 3, 4, 5)})
    paper = collect_paper(spec, tmp_path)
    # at the paper's own setting the full tier's target on the published number supplies ours
    assert (paper.headline.tier, paper.headline.summary.mean) == ("full", 4003)
    row = tables.leaderboard([paper]).iloc[0]
    assert row["published"] == "5,000 return" and row["ours_label"] == "full · return[ours]" and row["seeds"] == 5
    assert tables.published(paper, paper.spec.published).iloc[0]["ours (full tier)"].startswith("4,003 [4,002, 4,004] (5 seeds)")


def test_published_numbers_by_metric_with_their_shared_setting(tmp_path):
    pub = lambda metric, game, value: {"metric": metric, "value": value, "where": f"Table 1, {game}",  # noqa: E731
                                       "setting": {"game": game, "frames": "10M", "evaluation": metric}}
    spec = demo_spec(base={"published": [pub("return", "Pong", 20), pub("return", "Breakout", 168),
                                         pub("best_return", "Pong", 21)]})
    page = pages.paper_page(collect_paper(spec, tmp_path), {}, None)
    assert "**`return`**; frames: 10M; evaluation: return." in page
    assert "**`best_return`**." in page  # a single number: its whole setting stays in its row
    assert "| 168 | no target at this number | Table 1, Breakout | game=Breakout |  |" in page
    assert "| 21 | no target at this number | Table 1, Pong | game=Pong, frames=10M, evaluation=best_return |  |" in page


def test_paper_with_no_runs(tmp_path, spec):
    paper = collect_paper(spec, tmp_path)
    row = tables.leaderboard([paper]).iloc[0]
    assert (row["mini"], row["seeds"], row["newest"]) == ("implemented", 0, None) and row["ours"] is None
    page = pages.paper_page(paper, {}, None)
    assert "No runs yet." in page and "### Run records" not in page
    assert "make reproduce PAPER=demo TIER=mini" in page


def test_paper_with_only_a_smoke_run(tmp_path, spec):
    write_records(tmp_path, spec, "smoke", {("ours", 1): -900.0}, curve_points=10)
    paper = collect_paper(spec, tmp_path)
    assert [paper.tiers[t].display for t in ("smoke", "mini", "full")] == ["implemented"] * 3
    assert paper.headline is None  # a smoke run claims nothing
    assert paper.newest == "2026-01-01T00:05:00+00:00"
    page = pages.paper_page(paper, {}, None)
    smoke = page[page.index("## Smoke tier"):]
    assert "| ours | return | 1 | -900 |" in smoke and "-900" in smoke and "demo-smoke-ours-s1" in smoke


# -- plots, links, README -----------------------------------------------------------------------
def test_arm_groups_share_axes_by_config_or_target():
    sac = next(s for s in all_specs() if s.id == "sac")
    groups = sorted(sorted(g) for g in arm_groups(sac.tiers["mini"]))
    assert groups == [["ours", "sb3"], ["ours_halfcheetah", "sb3_halfcheetah"]]
    # different configs, but compared by a target: one figure
    assert arm_groups(demo_spec().tiers["mini"]) == [["ours", "baseline"]]


def test_tier_plots_are_pngs_per_group_and_curve(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    view = status(spec, tmp_path)
    plots = tier_plots(view.tier, view.status.records)
    assert [(p.curve, p.arms, p.seeds) for p in plots] == [
        ("train_return", ["ours", "baseline"], {"ours": 3, "baseline": 3}),
        ("critic_loss", ["ours", "baseline"], {"ours": 3, "baseline": 3})]
    assert all(p.png.startswith(b"\x89PNG\r\n\x1a\n") for p in plots)


def test_a_sweep_is_drawn_as_the_metric_against_the_varied_field(spec):
    from evals.spec import Tier
    from leaderboard.curves import plot_sweep, sweep_points

    arms = {"n1k": {"config": {"total_steps": 1000}}, "n5k": {"config": {"total_steps": 5000}},
            "n20k": {"config": {"total_steps": 20000}}}
    sweep = {"x": "total_steps", "metrics": ["return"], "series": {"ours": ["n1k", "n5k", "n20k"]}, "log_x": True}
    tier = Tier.model_validate({"seeds": [1, 2, 3], "arms": arms, "sweeps": [sweep]})
    records = []
    for arm, steps, values in (("n1k", 1000, [-400, -420, -380]), ("n5k", 5000, [-200, -180, -220]),
                               ("n20k", 20000, [-150, -140, -160])):
        for seed, v in zip((1, 2, 3), values):
            r = make_record(spec, "mini", "ours", seed, v)
            records.append(r.model_copy(update={"arm": arm, "config": {"total_steps": steps}}))
    pts = sweep_points(tier.sweeps[0], ["n1k", "n5k", "n20k"], "return", records)
    assert [(x, round(m, 6), n) for x, m, _, _, n in pts] == [(1000.0, -400.0, 3), (5000.0, -200.0, 3), (20000.0, -150.0, 3)]
    assert all(lo <= m <= hi and lo < hi for _, m, lo, hi, _ in pts)
    plot = plot_sweep(tier.sweeps[0], records)
    assert plot.kind == "sweep" and plot.png.startswith(b"\x89PNG") and plot.seeds == {"n1k": 3, "n5k": 3, "n20k": 3}
    assert plot_sweep(tier.sweeps[0], []) is None
    with pytest.raises(ValueError, match="unknown arm"):
        Tier.model_validate({"seeds": [1], "arms": arms, "sweeps": [{**sweep, "series": {"ours": ["n1k", "n2k"]}}]})


def test_repository_links():
    md = "See [the schema](../../evals/record.py#L10), [`spec`](spec.yaml), [web](https://x.org/a) and [top](#top)."
    assert repository_links(md, "reproductions/sac") == (
        "See the schema (`evals/record.py`), `spec`, [web](https://x.org/a) and [top](#top).")
    assert repository_links(md, "reproductions/sac", "https://github.com/o/r").startswith(
        "See [the schema](https://github.com/o/r/blob/main/evals/record.py#L10), "
        "[`spec`](https://github.com/o/r/blob/main/reproductions/sac/spec.yaml)")


def test_contributing_page_links():
    from leaderboard import mkdocs_hooks

    page = SimpleNamespace(file=SimpleNamespace(src_uri="contributing.md"))
    md = "[the spec](../reproductions/sac/spec.yaml) and [the method](methodology.md)"
    assert mkdocs_hooks.on_page_markdown(md, page, SimpleNamespace(extra={}), None) == (
        "the spec (`reproductions/sac/spec.yaml`) and [the method](methodology.md)")
    other = SimpleNamespace(file=SimpleNamespace(src_uri="methodology.md"))
    assert mkdocs_hooks.on_page_markdown(md, other, SimpleNamespace(extra={}), None) == md


def test_readme_section(tmp_path):
    (tmp_path / "README.md").write_text("# X\n\nintro\n\n## Implementation details that differ from the paper\n\n"
                                        "- uses [sac.py](sac.py)\n\n### detail\n\nmore\n\n## Next\n\nnot this\n")
    section = pages.readme_section(tmp_path / "README.md", "reproductions/x")
    assert section == "- uses sac.py (`reproductions/x/sac.py`)\n\n### detail\n\nmore"
    assert pages.readme_section(tmp_path / "missing.md", "reproductions/x") is None


# -- the command a page shows ----------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("paper,tier", [("sac", "mini"), ("dqn", "full")])
def test_command_is_what_make_runs(paper, tier):
    line = reproduce_command(paper, tier)
    assert line == f"make reproduce PAPER={paper} TIER={tier}"
    # what make would run for that line (-n: print, run nothing) is `repro reproduce` of that paper and tier
    out = subprocess.run(["make", "-n", *line.split()[1:]], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    cli = next(ln for ln in out.splitlines() if "repro reproduce" in ln)
    args = build_parser().parse_args(cli.split("repro ", 1)[1].split())
    assert (args.command, args.paper, args.tier) == ("reproduce", paper, tier)


def test_command_refuses_a_makefile_without_its_variables(tmp_path):
    mk = tmp_path / "Makefile"
    mk.write_text("PAPER ?= sac\nreproduce:\n\trepro reproduce $(PAPER)\n")
    with pytest.raises(MakefileError, match="variable 'TIER' is not defined"):
        reproduce_command("sac", "mini", mk)
    mk.write_text("PAPER ?= sac\nTIER ?= mini\nreproduce:\n\trepro reproduce $(PAPER)\n")
    with pytest.raises(MakefileError, match=r"recipe does not use \$\(TIER\)"):
        reproduce_command("sac", "mini", mk)


# -- every generated file -----------------------------------------------------------------------
def test_generate_every_page(tmp_path, spec):
    specs_root, results = tmp_path / "specs", tmp_path / "results"
    write_spec(spec, specs_root)
    write_spec(demo_spec("later", builds_on=["demo"], area="generative"), specs_root)
    paths = mini(results, spec, [-150, -160, -140], [-170, -180, -160])
    sample = paths[0].with_suffix("") / "grid.png"
    sample.parent.mkdir()
    sample.write_bytes(b"\x89PNG fixture")
    files = {}
    papers = generate(files.__setitem__, load_specs(specs_root), results, specs_root)
    assert [p.spec.id for p in papers] == ["demo", "later"]
    assert {"index.md", "SUMMARY.md", "curriculum.md", "papers/demo/index.md", "papers/later/index.md",
            "areas/generative/index.md", "papers/demo/mini-train_return-ours-baseline.png"} <= set(files)
    static = static_files(results)
    for p in paths:  # each record served as it is, where the page links it
        rel = f"results/demo/mini/{p.name}"
        assert static[rel] == p and f"../../{rel}" in files["papers/demo/index.md"]
    assert static[f"results/demo/mini/{paths[0].stem}/grid.png"] == sample
    assert static["javascripts/mermaid.min.js"].stat().st_size > 1_000_000
    assert f"../../results/demo/mini/{paths[0].stem}/grid.png" in files["papers/demo/index.md"]
    assert "demo --> later" in files["curriculum.md"] and 'click later href "../papers/later/"' in files["curriculum.md"]
    assert files["index.md"].count("<tr data-paper=") == 2
    nav = files["SUMMARY.md"]
    assert nav.index("(areas/generative/index.md)") < nav.index("(papers/later/index.md)")


def test_every_paper_with_no_results_at_all(tmp_path):
    files = {}
    papers = generate(files.__setitem__, all_specs(), tmp_path / "no-results", ROOT / "reproductions")
    assert len(papers) == 25 and files["index.md"].count("<tr data-paper=") == 25
    assert not any(name.endswith(".png") for name in files)
    assert set(static_files(tmp_path / "no-results")) == {"javascripts/mermaid.min.js"}


@pytest.mark.parametrize("other_thread", [False, True], ids=["forked", "fork-server"])
def test_plots_drawn_in_worker_processes_match_those_drawn_in_turn(tmp_path, spec, monkeypatch, other_thread):
    import threading

    from leaderboard import generate as gen

    other = demo_spec("other")
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    mini(tmp_path, other, [-140, -150, -130], [-170, -180, -160])
    papers = collect([spec, other], tmp_path)
    monkeypatch.setattr(gen, "PARALLEL_FROM", 10**9)
    in_turn = gen.draw_plots(papers)
    monkeypatch.setattr(gen, "PARALLEL_FROM", 1)
    monkeypatch.setattr(gen.os, "cpu_count", lambda: 2)
    contexts = []
    real_context = gen.multiprocessing.get_context
    monkeypatch.setattr(gen.multiprocessing, "get_context", lambda m: contexts.append(m) or real_context(m))
    monkeypatch.setattr(gen.threading, "active_count", lambda: 2 if other_thread else 1)
    pooled = gen.draw_plots(papers)
    assert contexts == ["forkserver" if other_thread else "fork"]
    assert {p: {t: [f.png for f in fs] for t, fs in d.items()} for p, d in pooled.items()} == \
        {p: {t: [f.png for f in fs] for t, fs in d.items()} for p, d in in_turn.items()}
    assert sorted(pooled) == ["demo", "other"] and len(pooled["demo"]["mini"]) == 2
