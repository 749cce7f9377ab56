"""SAC benchmarks: environment steps per second of ours vs Stable-Baselines3's SAC (same
hyper-parameters, same budget, same process), and the harness's overhead on a short run."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from evals.config import resolve
from evals.record import load_record
from evals.run import Run
from evals.runner import RunOptions, run_one
from evals.spec import load_spec
from reproductions.sac import sac, sb3_baseline

BUDGET = sac.Config(total_steps=1_500, learning_starts=500)  # 1,000 steps with a gradient update each


def _steps_per_second(module, cfg: sac.Config, folder: Path) -> float:
    run = Run(folder, seed=1, device="cpu", progress=False, tensorboard=False)
    t0 = time.perf_counter()
    module.train(cfg, run)
    elapsed = time.perf_counter() - t0
    run.close()
    return cfg.total_steps / elapsed


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for env_id in ("Pendulum-v1", "HalfCheetah-v5"):
            cfg = dataclasses.replace(BUDGET, env_id=env_id)
            ours = _steps_per_second(sac, cfg, tmp / f"ours-{env_id}")
            base = _steps_per_second(sb3_baseline, cfg, tmp / f"sb3-{env_id}")
            rows.append({"benchmark": f"SAC train, {env_id}", "ours": ours, "baseline": base,
                         "unit": "env steps/s (vs SB3)", "ratio": ours / base})

        job = resolve(load_spec("sac"), "mini", "ours", 1, {"total_steps": 2_000, "learning_starts": 500})
        opts = RunOptions(device="cpu", progress=False, results=tmp / "results", runs=tmp / "runs")
        p = load_record(run_one(job, opts)).provenance
        own = p.train_time_s - p.harness_overhead_s  # the paper's loop, less the harness calls inside it
        outside = p.wall_time_s - own - p.eval_time_s
        rows.append({"benchmark": "harness overhead, SAC 2k steps (excl. evaluation)", "ours": 100 * outside / p.wall_time_s,
                     "baseline": float("nan"), "unit": "% of wall time (aim < 2)", "ratio": float("nan")})
    return rows
