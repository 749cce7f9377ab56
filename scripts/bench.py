"""`make bench`: every paper's benchmarks, ours against a baseline timed in the same run.

Each `reproductions/<id>/bench.py` exposes `run() -> list[dict]` with rows
{benchmark, ours, baseline, unit, ratio}; ratios > 1 mean ours is faster (or smaller).
`python scripts/bench.py sac dqn` runs only those papers.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(papers: list[str]) -> None:
    torch.set_num_threads(1)
    found = sorted(p.parent.name for p in (ROOT / "reproductions").glob("*/bench.py"))
    unknown = [p for p in papers if p not in found]
    if unknown:
        sys.exit(f"bench: no benchmarks for {', '.join(unknown)} (papers with benchmarks: {', '.join(found)})")
    rows = []
    for paper in papers or found:
        t0 = time.perf_counter()
        print(f"[{paper}] running...", file=sys.stderr, flush=True)
        for row in importlib.import_module(f"reproductions.{paper}.bench").run():
            rows.append({"paper": paper, **row})
        print(f"[{paper}] done in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.float_format", "{:.3g}".format, "display.width", 200):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1:])
