"""Data-parallel runs: `repro reproduce PAPER --nproc N` starts N processes with `torchrun`.

Every process runs the same jobs through `runner.run_one`; the paper's training loop finds the
process group (`torch.distributed.is_initialized()`) and wraps its model in
DistributedDataParallel, each rank training on its slice of the same global batch. Rank 0 writes
the records and run directories; the other ranks write theirs to a scratch folder that is
removed. The backend is gloo on the CPU and NCCL on GPUs (one GPU per rank).

    python -m torch.distributed.run --standalone --nproc_per_node N -m evals.distributed PAPER [options]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from evals import paths


def torchrun_command(paper: str, nproc: int, tier: str, seeds: str | None = None, arms: str | None = None,
                     overrides: list[str] | None = None, device: str = "auto", threads: int = 1,
                     progress: bool = True, results: Path | None = None, runs: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "evals.distributed", paper, "--tier", tier, "--device", device, "--threads", str(threads),
           "--results", str(results or paths.results_dir()), "--runs", str(runs or paths.runs_dir())]
    cmd += ["--seeds", seeds] if seeds else []
    cmd += ["--arms", arms] if arms else []
    for pair in overrides or []:
        cmd += ["--set", pair]
    return cmd + ([] if progress else ["--no-progress"])


def launch(args) -> int:
    """Run `repro reproduce` under torchrun with `args.nproc` processes; returns the exit code."""
    cmd = torchrun_command(args.paper, args.nproc, args.tier, args.seeds, args.arms, args.set, args.device,
                           args.threads, not args.no_progress)
    print("launching: " + " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd).returncode


def _backend(device: str) -> str:
    import torch

    wants_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "nccl" if wants_gpu else "gloo"


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.distributed as dist

    from evals.config import parse_overrides, parse_seeds
    from evals.summary import tier_summary
    from evals.tier_runner import RunOptions, job_list, run_one

    p = argparse.ArgumentParser(prog="python -m evals.distributed", description=__doc__.splitlines()[0])
    p.add_argument("paper")
    p.add_argument("--tier", default="mini")
    p.add_argument("--seeds")
    p.add_argument("--arms")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", type=Path, default=paths.results_dir())
    p.add_argument("--runs", type=Path, default=paths.runs_dir())
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        p.error("run me through torchrun (repro reproduce PAPER --nproc N)")

    backend = _backend(args.device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = args.device
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group(backend)
    overrides = parse_overrides(args.set)
    jobs = job_list(args.paper, args.tier, parse_seeds(args.seeds), [a for a in (args.arms or "").split(",") if a] or None,
                    overrides)
    scratch = None if rank == 0 else Path(tempfile.mkdtemp(prefix=f"repro-rank{rank}-"))
    opts = RunOptions(device="cpu" if device == "auto" else device, threads=args.threads,
                      progress=not args.no_progress and rank == 0, tensorboard=rank == 0,
                      results=args.results if scratch is None else scratch / "results",
                      runs=args.runs if scratch is None else scratch / "runs")
    try:
        written = [run_one(job, opts) for job in jobs]
    finally:
        dist.destroy_process_group()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if rank == 0:
        print(tier_summary(args.paper, args.tier, written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
