"""Links in Markdown written for the repository (CONTRIBUTING.md, a paper's README.md) point at
repository files the site does not hold: on the site they go to the repository's web view when
its address is configured (`extra.repository_url`), else they become the file's path as code."""

from __future__ import annotations

import posixpath
import re

_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<url>[^)\s]+)\)")


def repository_links(markdown: str, base: str, repository_url: str = "", keep=lambda path: False) -> str:
    """Rewrite relative links of `markdown`, a file at `base` (a folder of the repository).

    `keep(path)` says which repository paths the site holds itself; those links stay."""

    def fix(m: re.Match) -> str:
        url, text = m.group("url"), m.group("text")
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", url, re.I):
            return m.group(0)
        path, _, anchor = url.partition("#")
        path = posixpath.normpath(posixpath.join(base, path))
        if keep(path):
            return m.group(0)
        if repository_url:
            return f"[{text}]({repository_url.rstrip('/')}/blob/main/{path}{'#' + anchor if anchor else ''})"
        return text if text.startswith("`") else f"{text} (`{path}`)"

    return _LINK.sub(fix, markdown)
