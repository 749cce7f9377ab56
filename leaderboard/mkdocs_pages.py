"""mkdocs-gen-files script (mkdocs.yml): writes the generated pages into the build, not the tree.

Reads the specs under `REPRO_SPECS` (default reproductions/) and the records under
`REPRO_RESULTS` (default results/).
"""

import logging

import mkdocs_gen_files
from mkdocs.structure.files import InclusionLevel

from evals.paths import results_dir, specs_dir
from leaderboard.collect import load_specs
from leaderboard.generate import generate

log = logging.getLogger("mkdocs.plugins.leaderboard")


def write(path: str, data) -> None:
    with mkdocs_gen_files.open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


generate(write, load_specs(specs_dir()), results_dir(), specs_dir(),
         mkdocs_gen_files.config["extra"].get("repository_url") or "", log.info)
# The navigation file is read by mkdocs-literate-nav, not a page of its own.
mkdocs_gen_files.FilesEditor.current().files.get_file_from_path("SUMMARY.md").inclusion = InclusionLevel.EXCLUDED
