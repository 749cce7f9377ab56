"""Third-party files the site serves itself, so that a page asks nothing of another host.

Mermaid (the architecture page's diagram; the curriculum graph is drawn at build time, as SVG):
Material would load it from a CDN unless `mermaid` is already defined, so the page loads this copy
first. It comes from the `mermaid` npm package, fetched with
`npm pack` (the package's tarball alone, no dependencies: `dist/mermaid.min.js` is self-contained)
into the virtual environment the first time a build needs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from evals.paths import ROOT

MERMAID_VERSION = "11.17.2"  # the major version Material for MkDocs 9 expects
CACHE = Path(os.environ.get("REPRO_SITE_CACHE") or Path(sys.prefix) / "share" / "repro-site")


class AssetError(RuntimeError):
    pass


def mermaid_js(cache: Path = CACHE) -> Path:
    target = cache / f"mermaid-{MERMAID_VERSION}" / "mermaid.min.js"
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(f"the site needs mermaid {MERMAID_VERSION} (npm package) at {target}, and npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([npm, "pack", "--silent", f"mermaid@{MERMAID_VERSION}", "--pack-destination", tmp],
                              capture_output=True, text=True, cwd=ROOT)
        tarballs = list(Path(tmp).glob("mermaid-*.tgz"))
        if done.returncode or not tarballs:
            raise AssetError(f"npm pack mermaid@{MERMAID_VERSION} failed: {done.stderr.strip()[-500:]}")
        with tarfile.open(tarballs[0]) as tar:
            member = tar.extractfile("package/dist/mermaid.min.js")
            if member is None:
                raise AssetError(f"{tarballs[0].name}: no package/dist/mermaid.min.js")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(member.read())
            partial.replace(target)
    return target
