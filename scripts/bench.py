"""`make bench`: every paper's benchmarks, ours against a baseline timed in the same run.

Each `reproductions/<id>/bench.py` exposes `run() -> list[dict]` with rows
{benchmark, ours, baseline, unit, ratio}; ratios > 1 mean ours is faster (or smaller). Papers'
benchmarks time their own code only; the rows that need the harness (its overhead on a run) are
here, under the name `harness`. A `run(config)` that takes an argument gets the paper's mini-tier
config (arm `ours`), resolved here from the spec. `python scripts/bench.py sac dqn harness` runs
only those.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def harness_rows() -> list[dict]:
    """The harness's overhead on a short SAC run: wall time outside the paper's own loop and
    outside evaluation, as a share of the run's wall time."""
    from evals.config import resolve
    from evals.record import load_record
    from evals.spec import load_spec
    from evals.tier_runner import RunOptions, run_one

    with tempfile.TemporaryDirectory() as tmp:
        job = resolve(load_spec("sac"), "mini", "ours", 1, {"total_steps": 2_000, "learning_starts": 500})
        opts = RunOptions(device="cpu", progress=False, results=Path(tmp) / "results", runs=Path(tmp) / "runs")
        p = load_record(run_one(job, opts)).provenance
    own = p.train_time_s - p.harness_overhead_s  # the paper's loop, less the harness calls inside it
    outside = p.wall_time_s - own - p.eval_time_s
    return [{"benchmark": "harness overhead, SAC 2k steps (excl. evaluation)", "ours": 100 * outside / p.wall_time_s,
             "baseline": float("nan"), "unit": "% of wall time (aim < 2)", "ratio": float("nan")}]


def rows_of(name: str) -> list[dict]:
    if name == "harness":
        return harness_rows()
    run = importlib.import_module(f"reproductions.{name}.bench").run
    if inspect.signature(run).parameters:
        from evals.config import resolve
        from evals.spec import load_spec

        return run(resolve(load_spec(name), "mini", "ours", 1).config)
    return run()


def main(papers: list[str]) -> None:
    torch.set_num_threads(1)
    found = sorted(p.parent.name for p in (ROOT / "reproductions").glob("*/bench.py")) + ["harness"]
    unknown = [p for p in papers if p not in found]
    if unknown:
        sys.exit(f"bench: no benchmarks for {', '.join(unknown)} (papers with benchmarks: {', '.join(found)})")
    rows = []
    for paper in papers or found:
        t0 = time.perf_counter()
        print(f"[{paper}] running...", file=sys.stderr, flush=True)
        for row in rows_of(paper):
            rows.append({"paper": paper, **row})
        print(f"[{paper}] done in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.float_format", "{:.3g}".format, "display.width", 200):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1:])
