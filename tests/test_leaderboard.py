"""The leaderboard's data and pages from fixture records: statuses, numbers, tables, plots, the
command line, and the generated files."""

import os
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from evals.cli import build_parser
from evals.record import RecordError, write_record
from evals.paths import ROOT
from evals.spec import Superseded, all_specs
from evals.stats import bootstrap_ci
from leaderboard import pages, tables
from leaderboard.collect import collect, collect_paper, load_specs
from leaderboard.command import MakefileError, reproduce_command
from leaderboard.curves import arm_groups, bootstrap_band, plot_curve, target_lines, tier_plots
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
    assert paper.claim("mini") is None and paper.setting_result[1] is None and paper.newest is None


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
    write_records(tmp_path, spec, "mini", {("ours", 1): -150, ("ours", 2): -160} | {("baseline", s): -170 for s in (1, 2, 3)})
    write_record(make_record(spec, "mini", "ours", 3, None, status="invalid", finished="2026-01-02T00:00:00+00:00"), tmp_path)
    view = status(spec, tmp_path)
    # seed 3's invalid run is its only one: no result, never read as a score, the seed still to run
    assert view.display == "implemented"
    assert [r.seed for r in view.invalid] == [3]
    assert view.status.arms["ours"]["return"].n == 2
    page = pages.paper_page(collect_paper(spec, tmp_path), {}, None)
    assert "1 counted seed(s) have an invalid evaluation" in page
    # its re-run's result counts, whatever the two runs' times say
    write_record(make_record(spec, "mini", "ours", 3, -140, finished="2026-01-01T00:01:00+00:00"), tmp_path)
    view = status(spec, tmp_path)
    assert view.display == "reproduced" and view.status.arms["ours"]["return"].n == 3 and not view.invalid
    roles = {(r.record.seed, r.record.status): view.role(r.record) for r in view.runs if r.record.arm == "ours"}
    assert roles[(3, "invalid")] == "invalid: superseded by the seed's result"
    assert roles[(3, "ok")] == "counted"


def test_two_results_of_one_seed_count_neither_whatever_their_order(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    for finished in ("2025-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"):  # before and after the genuine run
        forged = make_record(spec, "mini", "ours", 3, 500.0, finished=finished, run_id=f"demo-mini-ours-s3-{finished[:4]}")
        path = write_record(forged, tmp_path)
        view = status(spec, tmp_path)
        assert view.display == "implemented" and view.status.arms["ours"]["return"].n == 2
        assert view.role(forged) == "not counted: another run of this seed gave a result too"
        path.unlink()


def test_malformed_or_misplaced_records_fail_with_the_file(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    bad = tmp_path / "demo" / "mini" / "broken.json"
    bad.write_text('{"deep": ' + "[" * 100_000)
    (bad.parent / "latin1.json").write_bytes(b'{"arm": "caf\xe9"}')
    [paper] = collect([spec], tmp_path)  # listed as invalid, the other records read as ever
    view = paper.tiers["mini"]
    assert view.display == "reproduced" and len(view.unreadable) == 2
    page = pages.paper_page(paper, {}, None)
    assert "2 record file(s) are invalid and left out: <code>broken.json</code>: not a record: its JSON is nested too deeply" in page
    assert "<code>latin1.json</code>: not UTF-8 text (byte 0xe9" in page
    bad.unlink()
    (bad.parent / "latin1.json").unlink()
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


def test_the_claim_and_the_papers_setting_are_never_mixed(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    paper = collect_paper(spec, tmp_path)
    claim = paper.claim("mini")
    assert (claim.words, claim.verdict, claim.difference) == ("clears the floor", "met", False)
    assert claim.estimate.mean == -150 and tables.fmt_estimate(claim) == "mean -150 [-160, -140]"
    row = tables.leaderboard([paper]).iloc[0]
    # the mini number stands in the claim group only: the paper's setting waits for a full-tier run
    assert row["claim_estimate"] == "mean -150 [-160, -140]" and (row["targets_met"], row["targets_total"]) == (2, 2)
    assert row["published"] == "5,000 return" and row["ours"] is None and row["gap"] is None
    cells = dict(re.findall(r'<td data-label="([^"]+)"[^>]*>(.*?)</td>', pages.home([paper])))
    assert "mean -150 [-160, -140]" in cells["claim"]
    assert "5,000 return" in cells["paper&#x27;s setting"] and cells["ours, full tier"] == cells["gap"] == ""
    assert "ours (full tier)" not in tables.published(paper, paper.spec.published).columns
    write_records(tmp_path, spec, "full", {("ours", s): 4000.0 + s for s in (1, 2, 3, 4, 5)})
    paper = collect_paper(spec, tmp_path)
    pub, ours = paper.setting_result
    # at the paper's own setting the full tier's target on the published number supplies ours
    assert (pub.value, ours.term, ours.summary.mean) == (5000, "return[ours]", 4003)
    row = tables.leaderboard([paper]).iloc[0]
    assert row["ours"] == "4,003 [4,002, 4,004]" and row["seeds"] == 5 and not row["gap_better"]
    assert tables.fmt_gap(row["gap"], row["gap_relative"]) == "-997 (-20%)"
    assert tables.published(paper, paper.spec.published).iloc[0]["ours (full tier)"].startswith("4,003 [4,002, 4,004] (5 seeds)")


def test_a_paired_claim_is_a_difference(tmp_path):
    spec = demo_spec()
    spec.tiers["mini"].targets.reverse()  # ours >= baseline first
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    claim = collect_paper(spec, tmp_path).claim("mini")
    assert claim.difference and claim.estimate.mean == 20 and claim.words == "at least matches the baseline"


def test_a_stale_claim_is_pending_and_shows_no_number(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160], stale=True)
    paper = collect_paper(spec, tmp_path)
    claim = paper.claim("mini")
    assert claim.verdict == "pending" and claim.estimate is None
    row = tables.leaderboard([paper]).iloc[0]
    assert row["claim_estimate"] is None and row["targets_met"] is None


def test_published_numbers_link_the_full_tiers_target_or_nothing(tmp_path):
    def paper(pid):
        return collect_paper(next(s for s in all_specs() if s.id == pid), tmp_path)

    sac = paper("sac")
    cell = tables.published(sac, sac.spec.published).iloc[0]["full-tier target"]
    # SAC's full targets are 90% of the published returns: linked by the environment they run
    assert cell.endswith(">≥ 13,500</a>") and 'href="#full"' in cell
    ppo = paper("ppo")
    cells = tables.published(ppo, ppo.spec.published)["full-tier target"].tolist()
    assert cells[0] == ""  # the normalised score over 7 tasks: no target at it, and no filler either
    assert ">≥ 1,800</a>" in cells[1]
    fa = paper("flash_attention")
    assert "full-tier target" not in tables.published(fa, fa.spec.published).columns  # no target at any number
    page = pages.paper_page(sac, {}, None)
    assert "no target at this number" not in page and "no run yet" not in page


def test_published_numbers_by_metric_with_their_shared_setting(tmp_path):
    pub = lambda metric, game, value: {"metric": metric, "value": value, "where": f"Table 1, {game}",  # noqa: E731
                                       "setting": {"game": game, "frames": "10M", "evaluation": metric}}
    spec = demo_spec(base={"published": [pub("return", "Pong", 20), pub("return", "Breakout", 168),
                                         pub("best_return", "Pong", 21)]})
    page = pages.paper_page(collect_paper(spec, tmp_path), {}, None)
    assert "**<code>return</code>**; frames: 10M; evaluation: return." in page
    assert "**<code>best_return</code>**." in page  # a single number: its whole setting stays in its row
    assert "| 168 | Table 1, Breakout | game=Breakout |  |" in page  # no full-tier target at any: no column
    assert "| 21 | Table 1, Pong | game=Pong, frames=10M, evaluation=best_return |  |" in page


def test_paper_with_no_runs(tmp_path, spec):
    paper = collect_paper(spec, tmp_path)
    row = tables.leaderboard([paper]).iloc[0]
    assert (row["mini"], row["seeds"], row["newest"]) == ("implemented", 0, None) and row["ours"] is None
    assert row["claim_verdict"] == "pending" and row["claim_estimate"] is None
    page = pages.paper_page(paper, {}, None)
    assert "No runs yet." in page and "### Run records" not in page
    assert "make reproduce PAPER=demo TIER=mini" in page


def test_paper_with_only_a_smoke_run(tmp_path, spec):
    write_records(tmp_path, spec, "smoke", {("ours", 1): -900.0}, curve_points=10)
    paper = collect_paper(spec, tmp_path)
    assert [paper.tiers[t].display for t in ("smoke", "mini", "full")] == ["implemented"] * 3
    assert paper.claim("mini").estimate is None and paper.setting_result[1] is None  # a smoke run claims nothing
    assert paper.newest == "2026-01-01T00:05:00+00:00"
    page = pages.paper_page(paper, {}, None)
    smoke = page[page.index("## Smoke tier"):]
    assert "| ours | return | 1 | -900 |" in smoke and "-900" in smoke and "demo-smoke-ours-s1" in smoke


def test_a_superseded_target_is_shown_with_its_result_and_reason_and_counts_for_nothing(tmp_path):
    spec = demo_spec(base={"version": 2})
    spec.tiers["mini"].superseded = [Superseded(expr="return[ours] >= 9000", spec_version=1, result="-150: <b>not met</b>",
                                                reason="not the paper's claim")]
    paper = collect_paper(spec, tmp_path)
    assert len(paper.tiers["mini"].status.targets) == 2  # only the live targets are tested
    page = pages.paper_page(paper, {}, None)
    old = page[page.index("### Superseded targets"):page.index("### Caveats")]
    assert "<code>return[ours] &gt;= 9000</code>" in old and "spec v1" in old and "not the paper's claim" in old
    assert "&lt;b&gt;not met&lt;/b&gt;" in old  # escaped like every string from a spec


# -- plots, links, README -----------------------------------------------------------------------
def test_arm_groups_share_axes_by_config_or_target():
    sac = next(s for s in all_specs() if s.id == "sac")
    groups = sorted(sorted(g) for g in arm_groups(sac.tiers["mini"]))
    assert groups == [["fixed_hopper", "ours_hopper", "sb3_hopper", "td3_hopper"], ["ours"]]
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


def test_a_sweep_inside_one_run_reads_one_metric_per_value(spec):
    """A sweep with `values` (speculative decoding's speed-up at gamma 1..8, measured in one run):
    each value's point is the template's metric over the arm's seeds; one arm is a series; two
    sweeps over the same setting get different plot names; malformed templates are spec errors."""
    from evals.spec import Tier
    from leaderboard.curves import plot_sweep, sweep_points

    sweeps = [{"x": "gamma", "values": [1, 2, 4], "metrics": ["speedup_g{x}"], "series": {"ours": ["ours"]}},
              {"x": "gamma", "values": [1, 2, 4], "metrics": ["passes_g{x}"], "series": {"ours": ["ours"]}, "y": "passes"}]
    tier = Tier.model_validate({"seeds": [1, 2, 3], "sweeps": sweeps})
    assert tier.sweeps[0].named_metrics() == ["speedup_g1", "speedup_g2", "speedup_g4"]
    records = []
    for seed in (1, 2, 3):
        r = make_record(spec, "mini", "ours", seed, -100)
        metrics = {f"speedup_g{g}": g * 0.5 + seed * 0.1 for g in (1, 2)} | {f"passes_g{g}": float(g) for g in (1, 2, 4)}
        records.append(r.model_copy(update={"metrics": metrics}))
    pts = sweep_points(tier.sweeps[0], ["ours"], "speedup_g{x}", records)
    assert [(x, round(m, 6), n) for x, m, _, _, n in pts] == [(1.0, 0.7, 3), (2.0, 1.2, 3)]  # g4 reported by none
    plots = [plot_sweep(s, records) for s in tier.sweeps]
    assert all(p.png.startswith(b"\x89PNG") and p.seeds == {"ours": 3} for p in plots)
    assert plots[0].slug != plots[1].slug
    for bad, why in (({"metrics": ["speedup"]}, "needs '{x}'"), ({"values": [1]}, "at least two"),
                     ({"values": None}, "has '{x}' but the sweep has no values")):
        with pytest.raises(ValueError, match=re.escape(why)):
            Tier.model_validate({"seeds": [1], "sweeps": [{**sweeps[0], **bad}]})


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
    # the curriculum graph is drawn at build time: an SVG with an edge per builds_on and a link per paper
    assert 'class="rp-edge" data-from="demo" data-to="later"' in files["curriculum.md"]
    assert '<a href="../papers/later/">' in files["curriculum.md"] and "mermaid" not in files["curriculum.md"]
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


# -- what a page shows of a record's strings ------------------------------------------------------
SCRIPT = "<script>window.__pwned = 1</script>"


def test_a_long_protocol_value_is_capped_and_left_out_of_search(tmp_path, spec):
    outputs = {(arm, s): [f"{arm} sentence {s}-{i}" for i in range(500)] for arm in ("ours", "baseline") for s in (1, 2, 3)}
    for seed in (3, 2, 1):
        for arm in ("baseline", "ours"):  # on disk an ablation sorts first; the page follows the spec's arm order
            write_record(make_record(spec, "mini", arm, seed, -150.0 - seed, protocol={"outputs": outputs[arm, seed]}), tmp_path)
    page = pages.paper_page(collect_paper(spec, tmp_path), {}, None)
    boxes = re.findall(r'<div class="admonition info" data-search-exclude>.*?</div>', page)
    assert len(boxes) == 1  # six runs that differ only in what they produced share one box
    assert "500 items per run, in each run's record" in boxes[0] and "(ours, baseline)" in boxes[0]
    assert "ours sentence 1-0 · ours sentence 1-1 · ours sentence 1-2" in boxes[0] and "sentence 1-3" not in page
    assert "baseline sentence" not in boxes[0]


def test_sample_images_follow_the_specs_arm_order(tmp_path, spec):
    for seed in (2, 1):
        for arm in ("baseline", "ours"):  # on disk an ablation sorts first; the page shows the paper's method first
            path = write_record(make_record(spec, "mini", arm, seed, -150.0 - seed), tmp_path)
            path.with_suffix("").mkdir()
            (path.with_suffix("") / "grid.png").write_bytes(b"\x89PNG fixture")
    page = pages.paper_page(collect_paper(spec, tmp_path), {}, None)
    shown = re.findall(r'src="[^"]*/demo-mini-(\w+)-s(\d)-[^"]*/grid\.png"', page)
    assert shown == [("ours", "1"), ("ours", "2"), ("baseline", "1"), ("baseline", "2")]


def test_every_string_from_a_record_or_spec_is_escaped(tmp_path):
    spec = demo_spec(base={"summary": f"A summary with {SCRIPT} and `code <b>`.",
                           "published": [{"metric": "return", "value": 5000, "where": f"Table 1 {SCRIPT}",
                                          "setting": {"env": SCRIPT}, "note": SCRIPT}]})
    for seed in (1, 2, 3):
        for arm in ("ours", "baseline"):
            write_record(make_record(spec, "mini", arm, seed, -150.0, protocol={"actions": SCRIPT},
                                     hardware={"cpu": SCRIPT, "cpu_count": 2}), tmp_path)
    paper = collect_paper(spec, tmp_path)
    page = pages.paper_page(paper, {}, None)
    home = pages.home([paper])
    for text in (page, home):
        assert "<script>" not in text
    assert page.count("&lt;script&gt;") >= 5 and "`code <b>`" in page  # Markdown escapes a code span itself


def test_gpu_runs_name_the_gpus_in_the_cost_table(tmp_path, spec):
    gpu = {"cpu": "EPYC", "cpu_count": 16, "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 8, "device": "cuda"}
    for seed in (1, 2, 3):
        write_record(make_record(spec, "mini", "ours", seed, -150.0, hardware=gpu), tmp_path)
    cost = tables.cost(status(spec, tmp_path))
    assert cost.iloc[0]["hardware"] == "8 × NVIDIA H100 80GB HBM3, 16 CPU cores, device cuda"


def test_plots_name_their_task_and_draw_the_targets(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    view = status(spec, tmp_path)
    records = [r.model_copy(update={"config": {"env_id": "Pendulum-v1"}}) for r in view.status.records]
    train_return = tier_plots(view.tier, records)[0]
    assert train_return.title == "train_return on Pendulum-v1" and (train_return.width, train_return.height) == (1000, 390)
    # the floor on the evaluated return, drawn on the training return's axes, named by its expression
    assert target_lines(view.tier, ["train_return", "return"], ["ours", "baseline"]) == [(-200.0, "target return[ours] >= -200")]
    one_point = {"ours": [r.model_copy(update={"curves": {"total_parameters": [(0, 0.0, 1e6)]}})
                          for r in records if r.arm == "ours"]}
    assert plot_curve("total_parameters", one_point).png.startswith(b"\x89PNG")


def test_a_paper_page_explains_its_terms(tmp_path, spec):
    mini(tmp_path, spec, [-150, -160, -140], [-170, -180, -160])
    page = pages.paper_page(collect_paper(spec, tmp_path), {}, None)
    for term in ("A **tier** is", "*smoke* only checks", "An **arm** is", "a <i>difference</i> is the target's left side minus",
                 "<i>(dirty)</i>: the working tree had uncommitted changes"):
        assert term in page
    stub = pages.paper_page(collect_paper(spec.model_copy(update={"tiers": {}}), tmp_path), {}, None)
    assert pages.README_SECTION not in stub  # no code, nothing to differ: no placeholder


def test_every_paper_has_a_summary_and_every_implemented_one_its_readme_section():
    for spec in all_specs():
        assert spec.summary, f"{spec.id}: no summary"
        if spec.tiers:
            assert pages.readme_section(ROOT / "reproductions" / spec.id / "README.md", "x"), f"{spec.id}: no README section"


def test_repro_show_fits_a_100_column_terminal(capsys):
    from evals.cli import main

    for spec in all_specs():
        assert main(["show", spec.id]) == 0
        wide = [line for line in capsys.readouterr().out.splitlines() if len(line) > 100]
        # only a `where` longer than a line stays whole, on its own line: it is what one searches the paper for
        assert all(line.strip() in {p.where for p in spec.published} for line in wide), wide


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_reproduce_runs_on_every_core_by_default():
    out = subprocess.run(["make", "-n", "reproduce"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    jobs = int(re.search(r"--jobs (\d+)", out).group(1))
    assert jobs == min(os.cpu_count(), 8)
