"""MkDocs hooks (mkdocs.yml).

- The files the site serves as they are (every run record, sample images, Mermaid) join the
  build from where they lie, read from `REPRO_RESULTS` (default results/).
- CONTRIBUTING.md, included into site/contributing.md, links to files of the repository; on the
  site those links go to the repository or become paths (links.py).
"""

from mkdocs.structure.files import File

from evals.paths import results_dir
from leaderboard.generate import static_files
from leaderboard.links import repository_links


def on_files(files, config):
    for uri, path in static_files(results_dir()).items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "contributing.md":
        # include-markdown made the links relative to site/, where the page's source lies
        return repository_links(markdown, "site", config.extra.get("repository_url") or "",
                                keep=lambda path: path.startswith("site/"))
    return markdown
