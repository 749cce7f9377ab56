"""The site: a strict MkDocs build, and the built site in a real headless browser (Debian's
Chromium, driven by Playwright) served on 127.0.0.1, with every request it makes recorded."""

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from evals.paths import ROOT
from evals.spec import AREAS, all_specs, load_spec
from tests.fixtures.site.records import write_records

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "runs" / "screenshots"


def build(site: Path, results: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", DISABLE_MKDOCS_2_WARNING="true")
    if results is not None:
        env["REPRO_RESULTS"] = str(results)
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], cwd=ROOT, env=env, capture_output=True, text=True)


SCRIPT = "<script>window.__pwned = 1</script>"
PAGE_BUDGET = 400_000  # bytes of HTML per page
WIDTHS = (1400, 390)   # a desktop and a phone


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built from fixture records: SAC's mini tier reproduced (3 seeds, all five arms), one
    record's hardware a string with a script in it, every evaluation with 500 outputs."""
    root = tmp_path_factory.mktemp("site")
    sac = load_spec("sac")
    values = {("ours", s): v for s, v in ((1, -150.0), (2, -160.0), (3, -140.0))}
    values |= {("ours_hopper", s): v for s, v in ((1, 900.0), (2, 910.0), (3, 890.0))}
    values |= {("fixed_hopper", s): v for s, v in ((1, 800.0), (2, 820.0), (3, 780.0))}
    values |= {("td3_hopper", s): v for s, v in ((1, 700.0), (2, 730.0), (3, 690.0))}
    values |= {("sb3_hopper", s): v for s, v in ((1, 880.0), (2, 900.0), (3, 870.0))}
    outputs = {"outputs": [f"output {i}" for i in range(500)]}
    write_records(root / "results", sac, "mini", values, protocol=outputs,
                  hardware={"cpu": f"Fixture CPU {SCRIPT}", "cpu_count": 2})
    done = build(root / "site", root / "results")
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "site"


def _oversized(site: Path) -> list[str]:
    return [f"{p.relative_to(site)}: {p.stat().st_size:,} bytes" for p in site.rglob("*.html") if p.stat().st_size > PAGE_BUDGET]


def test_strict_build_of_the_committed_results(tmp_path):
    done = build(tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    index = (site / "index.html").read_text()
    assert index.count("<tr data-paper=") == 25
    assert "fonts.googleapis" not in index and "fonts.gstatic" not in index
    assert "Built " in index and " from revision " in index  # the footer: what the site was built from
    assert _oversized(site) == []
    assert not list(site.rglob("*.map"))  # the theme's source maps are left out
    assert "mermaid" not in (site / "curriculum" / "index.html").read_text()  # drawn at build time
    # CONTRIBUTING.md is included, not copied: its first heading is on the page
    heading = next(ln for ln in (ROOT / "CONTRIBUTING.md").read_text().splitlines() if ln.startswith("# "))
    assert heading[2:].strip() in (site / "contributing" / "index.html").read_text()


def test_fixture_pages_within_budget_and_record_strings_escaped(site):
    assert _oversized(site) == []
    page = (site / "papers" / "sac" / "index.html").read_text()
    assert SCRIPT not in page and "&lt;script&gt;window.__pwned" in page
    assert "output 3" not in page  # 500 outputs per run: three shown, the rest in the records
    index = json.loads((site / "search" / "search_index.json").read_text())
    assert not any("output 1" in doc["text"] for doc in index["docs"])  # and none in the search index


@pytest.fixture
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1"


def _visible(page) -> list[str]:
    return page.eval_on_selector_all("#leaderboard tr[data-paper]", "rows => rows.filter(r => !r.hidden && "
                                     "!r.parentElement.hidden).map(r => r.dataset.paper)")


def _one_paper_per_area() -> list[str]:
    """The oldest paper of each area: the paper pages the browser test opens and photographs."""
    specs = sorted(all_specs(), key=lambda s: (s.year, s.id))
    return [next(s.id for s in specs if s.area == area) for area in AREAS]


def _load_images(page) -> None:
    """Load the lazily loaded images now, and wait for every image to arrive."""
    page.evaluate("document.querySelectorAll('img').forEach(img => img.loading = 'eager')")
    page.wait_for_function("Array.from(document.images).every(img => img.complete)")


def _broken_images(page) -> list[str]:
    return page.eval_on_selector_all("img", "imgs => imgs.filter(i => !(i.naturalWidth > 0 && i.naturalHeight > 0))"
                                            ".map(i => i.getAttribute('src'))")


def _shoot(page, url: str, name: str, shots: Path) -> None:
    """Each width in turn: the page, its images loaded and unbroken, photographed whole."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(url, wait_until="networkidle")
        _load_images(page)
        assert _broken_images(page) == [], url
        page.screenshot(path=shots / f"{name}-{width}.png", full_page=True)


def _cells(page, label: str) -> dict[str, str]:
    return dict(page.eval_on_selector_all(
        f"#leaderboard tr[data-paper] td[data-label=\"{label}\"]",
        "tds => tds.map(td => [td.parentElement.dataset.paper, td.innerText.trim()])"))


def test_site_in_a_real_browser(server, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (scripts/ensure_chromium.sh)")
    from playwright.sync_api import sync_playwright

    requests, left, dialogs = [], [], []
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 900})
        ctx.set_default_timeout(60_000)
        ctx.on("request", lambda r: requests.append(r.url))
        # Anything not for 127.0.0.1 is recorded and refused, so a leak shows up as a failure, not a wait.
        ctx.route("**/*", lambda route: route.continue_() if _local(route.request.url)
                  else (left.append(route.request.url), route.abort()))
        page = ctx.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(server, wait_until="networkidle")

        # the leaderboard: 25 papers, grouped by area
        assert page.locator("#leaderboard tbody tr[data-paper]").count() == 25
        assert page.locator("#leaderboard tbody").count() == 6
        assert page.inner_text("#rp-count") == "25 papers"
        heads = page.eval_on_selector_all("#leaderboard thead th", "ths => ths.map(t => t.innerText.trim())")
        assert "smoke" not in heads and "Claim at CPU scale (mini tier)".upper() in [h.upper() for h in heads]

        # no mini number in the paper's setting: SAC's mini claim is in its claim, the published
        # number stands alone until a full-tier run counts
        claim = _cells(page, "claim")["sac"]
        assert "difference 180 [172, 188]" in claim and "✓" in claim
        assert set(_cells(page, "ours, full tier").values()) == {""} and set(_cells(page, "gap").values()) == {""}
        assert "-150" not in _cells(page, "paper's setting")["sac"]

        # filtering: by text, by status, by area
        page.fill("#rp-filter", "soft actor")
        assert _visible(page) == ["sac"]
        assert page.inner_text("#rp-count") == "1 of 25 papers"
        page.fill("#rp-filter", "")
        page.select_option("#rp-status", "reproduced")
        assert _visible(page) == ["sac"]  # the fixture records reproduce SAC's mini tier, nothing else
        page.select_option("#rp-status", "")
        page.select_option("#rp-area", "generative")
        assert sorted(_visible(page)) == ["controlnet", "ddpm", "ldm"]
        page.select_option("#rp-area", "")
        assert len(_visible(page)) == 25

        # sorting, within each area: by title, then reversed
        rl = "#leaderboard tbody[data-area='reinforcement-learning'] tr[data-paper]"
        titles = lambda: page.eval_on_selector_all(rl, "rows => rows.map(r => r.cells[0].dataset.sort)")  # noqa: E731
        page.click("#leaderboard thead th[data-col='0']")
        assert titles() == sorted(titles())
        page.click("#leaderboard thead th[data-col='0']")
        assert titles() == sorted(titles(), reverse=True)

        # a paper link opens its page, and its plots load
        page.click("#leaderboard a.rp-paper[href='papers/sac/']")
        page.wait_for_url("**/papers/sac/")
        assert "Soft Actor-Critic" in page.inner_text("h1")
        assert page.locator("img.rp-curve").count() >= 2
        # a record's string with a script in it is shown as text, and never runs
        assert SCRIPT in page.inner_text("body")
        assert page.evaluate("window.__pwned") is None

        shots = tmp_path / "shots"
        shots.mkdir()
        _shoot(page, server, "home", shots)
        # on a phone: the paper, its verdict and the claim come first, one card per paper
        sac = "#leaderboard tr[data-paper='sac']"
        top = lambda label: page.locator(f"{sac} td[data-label=\"{label}\"]").bounding_box()["y"]  # noqa: E731
        assert top("mini tier") < top("claim") < top("paper's setting")
        for pid in _one_paper_per_area():
            _shoot(page, f"{server}papers/{pid}/", f"paper-{pid}", shots)

        # the curriculum graph is drawn at build time: an SVG whose boxes link to the papers
        page.set_viewport_size({"width": 1400, "height": 900})
        page.goto(server + "curriculum/", wait_until="networkidle")
        assert page.locator("svg.rp-curriculum a").count() == 25
        assert page.locator("svg.rp-curriculum").bounding_box()["height"] > 300
        page.screenshot(path=shots / "curriculum-1400.png", full_page=True)
        assert not any(u.endswith("/javascripts/mermaid.min.js") for u in requests)

        # the architecture page draws its diagram from the site's own copy of Mermaid (Material draws
        # it in a closed shadow root: its size tells that it was drawn)
        page.goto(server + "architecture/", wait_until="networkidle")
        page.wait_for_function("() => { const d = document.querySelector('div.mermaid');"
                               " return d && d.getBoundingClientRect().height > 300; }")
        ctx.close()

    assert left == [] and [u for u in requests if not _local(u)] == [] and dialogs == []
    assert any(u.endswith("/javascripts/mermaid.min.js") for u in requests)
    assert (shots / "home-1400.png").stat().st_size > 10_000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for png in shots.glob("*.png"):
        shutil.copy(png, SCREENSHOTS / png.name)
