"""Run a tier: resolve each (arm, seed), train through the paper's code, evaluate with the common
evaluators, check the targets, write one record per run."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from evals import provenance
from evals.checkpoint import sha256_file
from evals.config import ResolvedRun, config_hash, paper_module, resolve
from evals.evaluators import resolve_evaluator
from evals import paths
from evals.record import (IMAGE_MAGIC, NAME_PATTERN, EvalResult, Provenance, Record, TargetCheck, image_problem,
                          new_run_id, now_iso, publish_images, thin_curve, write_record)
from evals.run_context import DivergenceError, PrefixReached, Run, seed_everything, select_device
from evals.spec import SpecError, get_tier, load_spec
from evals.stats import OPS


@dataclasses.dataclass
class RunOptions:
    device: str = "auto"
    deterministic: bool = False
    threads: int = 1
    checkpoint_every: int = 0
    resume: bool = False
    progress: bool = True
    position: int = 0
    tensorboard: bool = True
    stop_after_step: int = 0  # > 0: a verification prefix (no evaluation, record status "prefix")
    results: Path = dataclasses.field(default_factory=paths.results_dir)
    runs: Path = dataclasses.field(default_factory=paths.runs_dir)


def evaluators_for(paper: str, tier: str):
    spec = load_spec(paper)
    where = f"{spec.folder / 'spec.yaml'}: tiers.{tier}.evaluators"
    return [resolve_evaluator(e, f"{where}[{i}]") for i, e in enumerate(get_tier(spec, tier).evaluators)]


def evaluate_agent(agent, config, evaluators, image_dir: Path | None = None) -> list[EvalResult]:
    """Each evaluator's result; with `image_dir` (the run's folder), the images the evaluators drew
    (`Measured.images`) are written there, to be published beside the record."""
    results, images = [], {}
    for ev, opts in evaluators:
        result, drawn = ev.measure(agent, config, opts)
        results.append(result)
        for name, data in drawn.items():
            if not re.fullmatch(NAME_PATTERN, name) or Path(name).suffix.lower() not in IMAGE_MAGIC or name in images:
                raise ValueError(f"evaluator {ev.name}: image name {name!r} is not a unique PNG or JPEG file name")
            images[name] = data
    if image_dir is not None:
        for name, data in images.items():
            (image_dir / name).write_bytes(data)
            if (problem := image_problem(image_dir / name)) is not None:
                raise ValueError(f"an evaluator's image cannot be published: {problem}")
    return results


def _find_resumable(run_root: Path, arm: str, seed: int, chash: str) -> Path | None:
    """The newest run dir of this arm, seed and config that has not finished."""
    candidates = []
    for meta in run_root.glob("*/run.json"):
        info = json.loads(meta.read_text())
        if info["arm"] == arm and info["seed"] == seed and info["config_hash"] == chash and info["status"] != "done":
            candidates.append((info["started_at"], meta.parent))
    return max(candidates)[1] if candidates else None


def _own_target_checks(paper: str, tier: str, arm: str, metrics: dict[str, float]) -> list[TargetCheck]:
    """Targets that compare this arm's metric with a constant, checked on this seed alone."""
    checks = []
    for t in get_tier(load_spec(paper), tier).targets:
        lhs, op, rhs = t.parsed
        if lhs.arm == arm and lhs.minus_arm is None and rhs.const is not None and lhs.metric in metrics:
            value = lhs.scale * metrics[lhs.metric]
            checks.append(TargetCheck(expr=t.expr, value=value, met=bool(OPS[op](value, rhs.const))))
    return checks


class RunInProgress(RuntimeError):
    """Another process is running the same paper, tier, arm and seed."""


@contextlib.contextmanager
def exclusive(resolved: ResolvedRun, runs: Path):
    """Hold runs/<paper>/<tier>/<arm>-s<seed>.lock while the run lasts; refuse a second run of the
    same (paper, tier, arm, seed) meanwhile, which would make a second record of that seed. The
    lock (flock) goes with the process that holds it, so a killed run leaves none behind."""
    path = runs / resolved.paper / resolved.tier / f"{resolved.arm}-s{resolved.seed}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunInProgress(f"{path}: {resolved.paper}/{resolved.tier} arm {resolved.arm!r} seed {resolved.seed} "
                                f"is being run already ({f.read().strip() or 'another process'}); wait for it to "
                                "end: a seed is run once") from None
        f.truncate(0)
        f.write(f"process {os.getpid()} since {now_iso()}\n")
        f.flush()
        yield


def run_one(resolved: ResolvedRun, opts: RunOptions) -> Path:
    """Train, evaluate and record one (paper, tier, arm, seed), alone (`exclusive`). Returns the
    record's path."""
    with exclusive(resolved, opts.runs):
        return _run_one(resolved, opts)


def _run_one(resolved: ResolvedRun, opts: RunOptions) -> Path:
    spec = load_spec(resolved.paper)
    evaluators = evaluators_for(resolved.paper, resolved.tier)  # fail on a bad option before training
    module = paper_module(resolved.module)
    device = select_device(opts.device)
    cfg_dict = resolved.config_dict
    chash = config_hash(cfg_dict)
    run_root = opts.runs / resolved.paper / resolved.tier
    run_dir = _find_resumable(run_root, resolved.arm, resolved.seed, chash) if opts.resume else None
    run_id = run_dir.name if run_dir else new_run_id(resolved.paper, resolved.tier, resolved.arm, resolved.seed)
    run_dir = run_dir or run_root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    meta_path = run_dir / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {
        "run_id": run_id, "paper": resolved.paper, "tier": resolved.tier, "arm": resolved.arm,
        "seed": resolved.seed, "module": resolved.module, "config": cfg_dict, "config_hash": chash,
        "started_at": now_iso(),
    }
    meta["status"] = "running"
    meta_path.write_text(json.dumps(meta, indent=1))
    try:
        path = _train_and_record(resolved, opts, spec, evaluators, module, device, run_id, run_dir, meta)
    except BaseException:  # stopped, or crashed: the folder says so, and --resume finds it
        meta["status"] = "interrupted"
        meta_path.write_text(json.dumps(meta, indent=1))
        raise
    meta.update(status="done", record=str(path))
    meta_path.write_text(json.dumps(meta, indent=1))
    return path


def _train_and_record(resolved: ResolvedRun, opts: RunOptions, spec, evaluators, module, device, run_id: str,
                      run_dir: Path, meta: dict) -> Path:
    config, cfg_dict = resolved.config, resolved.config_dict

    rev, dirty = provenance.git_revision()  # the code the run starts from
    files = provenance.source_files(resolved.module)
    src_hash = provenance.hash_files(files)
    torch.set_num_threads(opts.threads)
    seed_everything(resolved.seed, opts.deterministic)
    t_start = time.perf_counter()
    run = Run(run_dir, resolved.seed, device, checkpoint_every=opts.checkpoint_every, resume=opts.resume,
              progress=opts.progress, progress_label=f"{resolved.paper}/{resolved.tier} {resolved.arm} seed {resolved.seed}",
              progress_position=opts.position, tensorboard=opts.tensorboard, stop_after_step=opts.stop_after_step)
    status, error, evaluations, ckpt_sha, ckpt_path = "ok", None, [], None, None
    t_train = time.perf_counter()
    try:
        agent = module.train(config, run)
    except DivergenceError as e:
        status, error = "failed", str(e)
    except PrefixReached as e:
        status, error = "prefix", str(e)
    finally:
        train_time = time.perf_counter() - t_train
        run.close()
    eval_time = 0.0
    if status == "ok":
        ckpt_path = run.save_final(agent.save)
        ckpt_sha = sha256_file(ckpt_path)
        t_eval = time.perf_counter()
        try:
            evaluations = evaluate_agent(agent, config, evaluators, image_dir=run_dir)
        except Exception as e:  # a broken evaluation makes the run invalid, never a score of zero
            status, error = "invalid", f"evaluation failed: {type(e).__name__}: {e}"
        eval_time = time.perf_counter() - t_eval

    metrics = {k: v for ev in evaluations for k, v in ev.metrics.items()}
    wall = time.perf_counter() - t_start + run.elapsed_before
    record = Record(
        run_id=run_id, paper=resolved.paper, tier=resolved.tier, arm=resolved.arm, seed=resolved.seed,
        module=resolved.module, status=status, error=error, config=cfg_dict, metrics=metrics,
        evaluations=evaluations,
        curves={k: thin_curve(v) for k, v in run.curves.items()},
        targets=_own_target_checks(resolved.paper, resolved.tier, resolved.arm, metrics),
        provenance=Provenance(
            git_revision=rev, git_dirty=dirty, source_hash=src_hash,
            source_files=sorted(files), spec_version=spec.version, packages=provenance.packages(),
            hardware=provenance.hardware(str(device)), started_at=meta["started_at"], finished_at=now_iso(),
            wall_time_s=round(wall, 3), train_time_s=round(train_time, 3), eval_time_s=round(eval_time, 3),
            harness_overhead_s=round(run.overhead_s, 4), deterministic=opts.deterministic,
            data_fingerprint=module.data_fingerprint(config),
            checkpoint_sha256=ckpt_sha,
            checkpoint_path=os.path.relpath(ckpt_path, opts.runs.parent) if ckpt_path else None,
        ),
    )
    path = write_record(record, opts.results)
    publish_images(run_dir, path)
    return path


def job_list(paper: str, tier: str, seeds: list[int] | None, arms: list[str] | None,
             overrides: dict[str, Any]) -> list[ResolvedRun]:
    """Every (arm, seed) of the tier, resolved and validated up front (one bad override fails
    before any run starts)."""
    spec = load_spec(paper)
    t = get_tier(spec, tier)
    for a in arms or []:
        if a not in t.arms:
            raise SpecError(f"{spec.folder / 'spec.yaml'}: tier '{tier}' has no arm {a!r} (arms: {', '.join(t.arms)})")
    evaluators_for(paper, tier)
    return [resolve(spec, tier, arm, seed, overrides) for arm in (arms or list(t.arms)) for seed in (seeds or t.seeds)]


def missing_data(jobs: list[ResolvedRun]) -> list[str]:
    """What the jobs' arms need that is not on this machine (each paper module's `required_data`),
    one line per missing item, checked before any run starts."""
    out: list[str] = []
    for arm in dict.fromkeys(j.arm for j in jobs):
        job = next(j for j in jobs if j.arm == arm)
        out += [f"{job.paper}/{job.tier} arm {arm}: {m}" for m in paper_module(job.module).required_data(job.config)]
    return out


def _run_job(job: dict[str, Any]) -> str:
    """A job in a worker process (local pool or submitit): plain values in, the record path out."""
    spec = load_spec(job["paper"])
    resolved = resolve(spec, job["tier"], job["arm"], job["seed"], job["overrides"])
    return str(run_one(resolved, RunOptions(**job["options"])))


def launch(jobs: list[ResolvedRun], overrides: dict[str, Any], opts: RunOptions, n_jobs: int = 1,
           launcher: str = "local", slurm: dict[str, Any] | None = None) -> list[Path]:
    if launcher == "local" and n_jobs <= 1:
        return [run_one(j, opts) for j in jobs]
    payloads = [
        {"paper": j.paper, "tier": j.tier, "arm": j.arm, "seed": j.seed, "overrides": overrides,
         "options": {**dataclasses.asdict(opts), "position": i % max(n_jobs, 1)}}
        for i, j in enumerate(jobs)
    ]
    if launcher == "local":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("spawn")) as pool:
            return [Path(p) for p in pool.map(_run_job, payloads)]
    import submitit

    folder = opts.runs / "submitit"
    if launcher == "slurm":
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        executor.update_parameters(**(slurm or {}))
    elif launcher == "submitit-local":  # submitit's local executor: the Slurm path, tested on this machine
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=60)
    else:
        raise SpecError(f"--launcher {launcher!r}: expected local, slurm or submitit-local")
    submitted = executor.map_array(_run_job, payloads)
    return [Path(s.result()) for s in submitted]
