"""MkDocs hooks (mkdocs.yml).

- The files the site serves as they are (every run record, sample images, Mermaid for the
  architecture page) join the build from where they lie, read from `REPRO_RESULTS` (default results/).
- The theme's source maps (1.3 MB, for debugging Material itself) are left out, and so are the
  comments in its scripts and stylesheets that point at them.
- Every page's footer names the revision and the date the site was built from.
- CONTRIBUTING.md, included into site/contributing.md, links to files of the repository; on the
  site those links go to the repository or become paths (links.py).
"""

import re
from datetime import datetime, timezone
from pathlib import Path

from mkdocs.structure.files import File

from evals.paths import results_dir
from evals.provenance import git, git_revision
from leaderboard.generate import static_files
from leaderboard.links import repository_links

SOURCE_MAP_COMMENT = re.compile(rb"\n?(//# sourceMappingURL=\S+|/\*# sourceMappingURL=\S+ \*/)\s*$")


def build_note(now: datetime | None = None) -> str:
    """`Built 2026-11-26 from revision 8f01589 (committed 2026-11-25)`, and whether the working tree
    had uncommitted changes."""
    rev, dirty = git_revision()
    day = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
    if rev is None:
        return f"Built {day}, outside a git checkout"
    committed = git("show", "-s", "--format=%cs", rev)
    return (f"Built {day} from revision {rev[:10]}" + (f" (committed {committed})" if committed else "")
            + (", with uncommitted changes" if dirty else ""))


def on_config(config):
    config.copyright = build_note()
    return config


def on_files(files, config):
    for f in [f for f in files if f.src_uri.endswith(".map")]:
        files.remove(f)
    for uri, path in static_files(results_dir()).items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_post_build(config):
    for path in Path(config.site_dir, "assets").rglob("*.min.*"):
        if path.suffix in (".js", ".css"):
            data = path.read_bytes()
            stripped = SOURCE_MAP_COMMENT.sub(b"", data)
            if stripped != data:
                path.write_bytes(stripped)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "contributing.md":
        # include-markdown made the links relative to site/, where the page's source lies
        return repository_links(markdown, "site", config.extra.get("repository_url") or "",
                                keep=lambda path: path.startswith("site/"))
    return markdown
