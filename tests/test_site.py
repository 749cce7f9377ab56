"""The site: a strict MkDocs build, and the built site in a real headless browser (Debian's
Chromium, driven by Playwright) served on 127.0.0.1, with every request it makes recorded."""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from evals.paths import ROOT
from evals.spec import load_spec
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


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built from fixture records: SAC's mini tier reproduced (3 seeds, ours and SB3)."""
    root = tmp_path_factory.mktemp("site")
    sac = load_spec("sac")
    values = {("ours", s): v for s, v in ((1, -150.0), (2, -160.0), (3, -140.0))}
    values |= {("sb3", s): v for s, v in ((1, -155.0), (2, -165.0), (3, -150.0))}
    write_records(root / "results", sac, "mini", values)
    done = build(root / "site", root / "results")
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "site"


def test_strict_build_of_the_committed_results(tmp_path):
    done = build(tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count("<tr data-paper=") == 25
    assert "fonts.googleapis" not in index and "fonts.gstatic" not in index
    # CONTRIBUTING.md is included, not copied: its first heading is on the page
    heading = next(ln for ln in (ROOT / "CONTRIBUTING.md").read_text().splitlines() if ln.startswith("# "))
    assert heading[2:].strip() in (tmp_path / "site" / "contributing" / "index.html").read_text()


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


def test_site_in_a_real_browser(server, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (scripts/ensure_chromium.sh)")
    from playwright.sync_api import sync_playwright

    requests, left = [], []
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
        page.goto(server, wait_until="networkidle")

        # the leaderboard: 25 papers, grouped by area
        assert page.locator("#leaderboard tbody tr[data-paper]").count() == 25
        assert page.locator("#leaderboard tbody").count() == 6
        assert page.inner_text("#rp-count") == "25 papers"
        shot = tmp_path / "leaderboard.png"
        page.screenshot(path=shot, full_page=True)

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
        page.click("#leaderboard thead th:nth-child(1)")
        assert titles() == sorted(titles())
        page.click("#leaderboard thead th:nth-child(1)")
        assert titles() == sorted(titles(), reverse=True)

        # a paper link opens its page, and its plots load
        page.click("#leaderboard a.rp-paper[href='papers/sac/']")
        page.wait_for_url("**/papers/sac/")
        assert "Soft Actor-Critic" in page.inner_text("h1")
        img = page.locator("img.rp-curve").first
        img.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        assert page.locator("img.rp-curve").count() >= 2
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=tmp_path / "paper-sac.png", full_page=True)

        # the curriculum graph renders from the site's own copy of Mermaid (Material draws it in a
        # closed shadow root: its size tells that it was drawn, the source has the links)
        page.goto(server + "curriculum/", wait_until="networkidle")
        page.wait_for_function("() => { const d = document.querySelector('div.mermaid');"
                               " return d && d.getBoundingClientRect().height > 300; }")
        page.screenshot(path=tmp_path / "curriculum.png", full_page=True)
        ctx.close()

    assert left == [] and [u for u in requests if not _local(u)] == []
    assert any(u.endswith("/javascripts/mermaid.min.js") for u in requests)
    assert shot.stat().st_size > 10_000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for png in tmp_path.glob("*.png"):
        shutil.copy(png, SCREENSHOTS / png.name)
