"""Where things are: the checkout, the papers, the committed records and the run folders.

`REPRO_RESULTS` and `REPRO_RUNS` move the records and the run folders elsewhere (tests, a scratch
re-execution, a cluster's shared disk); every command reads them through `results_dir()` and
`runs_dir()`, at call time. `REPRO_SPECS` points the site at another folder of `<id>/spec.yaml`
(the site's tests and its build-time benchmark).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPRODUCTIONS = ROOT / "reproductions"


def results_dir() -> Path:
    return Path(os.environ.get("REPRO_RESULTS") or ROOT / "results")


def runs_dir() -> Path:
    return Path(os.environ.get("REPRO_RUNS") or ROOT / "runs")


def specs_dir() -> Path:
    return Path(os.environ.get("REPRO_SPECS") or REPRODUCTIONS)
