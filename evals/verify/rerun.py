"""The checks that run code: re-execution of smoke and mini records, re-evaluation of full ones.

Re-execution runs the record's (arm, seed) again on the CPU in deterministic mode, with the
record's config, to the end when asked (`whole`: what verify's plan draws, evals/verify/plan.py)
or where the tier sets no `verify_steps`, else up to the first value logged past that step (every
schedule is the full run's, so the prefix must match; a prefix that compares nothing fails), and compares
the logged values (never wall times, nor the measurements of time the tier names in
`verify_timings`) at every step both runs logged, within `rtol`/`atol`: the
same code on the same kind of CPU gives the same bits, and the tolerance absorbs the last-place
differences of another CPU's vector units. A whole run must also give the same status, metrics
and per-episode values.

Re-evaluation loads a full-tier run's checkpoint (safetensors only, found by its sha256), scores
it with the tier's evaluators on a CI-sized budget, and tests every claimed metric against the
fresh per-episode values: the `confidence` (99%) percentile-bootstrap interval of the difference
(fresh minus claimed, both resampled) must contain 0. A metric that is the mean of the samples of
its name is tested as a mean; one its evaluator derives from the samples (an accuracy, BLEU) is
recomputed by `derive` from each resample of the samples' rows. A claimed metric that cannot be
tested so fails. Resampling episodes is right here:
the question is whether one checkpoint's claimed episodes and fresh ones come from the same
distribution, not how the method varies across seeds.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from evals.checkpoint import CheckpointError, load_agent, safetensors_problem, sha256_file
from evals.config import paper_module, resolve
from evals.evaluators import EvaluatorSpec, derived_metrics, resolve_evaluator
from evals.record import EvalResult, Record, load_record
from evals.tier_runner import RunOptions, evaluate_agent, run_one
from evals.spec import Spec, Tier
from evals.verify.repo import VerifyOptions
from evals.verify.report import RecordReport

N_BOOTSTRAP = 10_000
N_DERIVED_BOOTSTRAP = 1_000  # each resample runs the evaluator's derive


@contextlib.contextmanager
def _torch_settings():
    """run_one sets threads and deterministic algorithms process-wide; put them back after."""
    threads = torch.get_num_threads()
    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)


def _close(a: float, b: float, opts: VerifyOptions) -> bool:
    return math.isclose(a, b, rel_tol=opts.rtol, abs_tol=opts.atol)


def _by_step(points) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for step, _, value in points:
        out.setdefault(step, []).append(value)
    return out


def _within(short: list[float], long: list[float], opts: VerifyOptions) -> bool:
    """`short` is `long` with some values left out (curves are thinned to at most 200 points, and
    several values may share a step, e.g. episodes of parallel envs ending together)."""
    it = iter(long)
    return len(short) <= len(long) and all(any(_close(x, y, opts) for y in it) for x in short)


def compare_curves(recorded: Record, fresh: Record, opts: VerifyOptions, rep: RecordReport, note: str) -> int:
    """Compare the values logged at the steps both runs share; returns how many matched."""
    matched = 0
    for name in sorted(set(recorded.curves) & set(fresh.curves)):
        mine, theirs = _by_step(recorded.curves[name]), _by_step(fresh.curves[name])
        for step in sorted(set(mine) & set(theirs)):
            a, b = mine[step], theirs[step]
            if not _within(a, b, opts) and not _within(b, a, opts):
                rep.fail("re-execution", f"curves.{name}", f"step {step}: recorded {a}, re-executed {b} "
                                                           f"(rtol {opts.rtol:g}){note}")
                break
            matched += min(len(a), len(b))
    return matched


def compare_whole(recorded: Record, fresh: Record, opts: VerifyOptions, rep: RecordReport, note: str) -> None:
    if recorded.status != fresh.status:
        rep.fail("re-execution", "status", f"recorded {recorded.status!r}, the re-execution ended {fresh.status!r}"
                                           f"{': ' + fresh.error if fresh.error else ''}{note}")
        return
    for name, value in recorded.metrics.items():
        if name in fresh.metrics and not _close(value, fresh.metrics[name], opts):
            rep.fail("re-execution", f"metrics.{name}", f"recorded {value!r}, re-executed {fresh.metrics[name]!r}{note}")
    for i, (a, b) in enumerate(zip(recorded.evaluations, fresh.evaluations)):
        for name, xs in a.samples.items():
            ys = b.samples.get(name, [])
            if len(xs) != len(ys) or not all(_close(x, y, opts) for x, y in zip(xs, ys)):
                rep.fail("re-execution", f"evaluations[{i}].samples.{name}", f"recorded {xs}, re-executed {ys}{note}")


def without_timings(rec: Record, patterns: list[str]) -> tuple[Record, list[str]]:
    """`rec` without the curves, metrics and samples whose names match `patterns` (the tier's
    `verify_timings`: wall-clock measurements, which no re-execution repeats), and those names."""
    def keep(name: str) -> bool:
        return not any(fnmatch.fnmatchcase(name, p) for p in patterns)

    dropped = sorted({n for n in [*rec.curves, *rec.metrics, *(s for ev in rec.evaluations for s in ev.samples)]
                      if not keep(n)})
    evaluations = [ev.model_copy(update={"metrics": {k: v for k, v in ev.metrics.items() if keep(k)},
                                         "samples": {k: v for k, v in ev.samples.items() if keep(k)}})
                   for ev in rec.evaluations]
    return rec.model_copy(update={"curves": {k: v for k, v in rec.curves.items() if keep(k)},
                                  "metrics": {k: v for k, v in rec.metrics.items() if keep(k)},
                                  "evaluations": evaluations}), dropped


def compare_names(recorded: Record, fresh: Record, rep: RecordReport, note: str) -> None:
    """A whole run logs the same curves, metrics and samples as its record: nothing left out of
    the record, nothing added to it."""
    for what, a, b in (("curves", set(recorded.curves), set(fresh.curves)),
                       ("metrics", set(recorded.metrics), set(fresh.metrics)),
                       ("evaluations", [ev.evaluator for ev in recorded.evaluations], [ev.evaluator for ev in fresh.evaluations])):
        if a != b:
            rep.fail("re-execution", what, f"recorded {sorted(a) if isinstance(a, set) else a}, the re-execution gave "
                                           f"{sorted(b) if isinstance(b, set) else b}{note}")
    for i, (a, b) in enumerate(zip(recorded.evaluations, fresh.evaluations)):
        if set(a.samples) != set(b.samples):
            rep.fail("re-execution", f"evaluations[{i}].samples", f"recorded {sorted(a.samples)}, the re-execution "
                                                                  f"gave {sorted(b.samples)}{note}")


def reexecute(rec: Record, spec: Spec, tier: Tier, opts: VerifyOptions, rep: RecordReport,
              whole: bool = False) -> Record:
    """Re-execute `rec` and compare; `whole` runs it to the end even where the tier sets
    `verify_steps` (recertification), and then also asks for the same names."""
    resolved = resolve(spec, rec.tier, rec.arm, rec.seed, {})
    device = rec.provenance.hardware.get("device", "cpu")
    note = "" if str(device).startswith("cpu") else f" (the run was made on {device}; re-executed on the CPU)"
    kernels, here = rec.provenance.hardware.get("cpu_kernels"), torch.backends.cpu.get_cpu_capability()
    if kernels is not None and kernels != here:
        note += f" (the run used {kernels} CPU kernels, this machine {here}: see evals/__init__.py)"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="repro-verify-") as tmp, _torch_settings():
        run_opts = RunOptions(device="cpu", deterministic=True, threads=int(rec.provenance.hardware.get("torch_threads", 1)),
                              progress=False, tensorboard=False, results=Path(tmp) / "results", runs=Path(tmp) / "runs",
                              stop_after_step=0 if whole else tier.verify_steps or 0)
        fresh = load_record(run_one(resolved, run_opts))
    whole = fresh.status != "prefix"
    took = time.perf_counter() - t0
    rec, timings = without_timings(rec, tier.verify_timings)
    fresh, _ = without_timings(fresh, tier.verify_timings)
    before = len(rep.failures)
    if whole:
        compare_names(rec, fresh, rep, note)
        compare_whole(rec, fresh, opts, rep, note)
    matched = compare_curves(rec, fresh, opts, rep, note)
    if not matched and len(rep.failures) == before and (rec.curves or not whole):
        rep.fail("re-execution", "curves", f"no logged step in common with the re-executed "
                                           f"{'run' if whole else f'prefix (steps up to {tier.verify_steps})'}")
    if len(rep.failures) == before:
        what = "whole run" if whole else f"prefix: steps up to {tier.verify_steps}"
        skipped = f"; timings not compared: {', '.join(timings)}" if timings else ""
        rep.passed.append(f"re-execution ({what}: {matched} logged values match, {took:.1f}s{skipped})")
    return fresh


# -- re-evaluation --------------------------------------------------------------------------
def find_checkpoint(rec: Record, opts: VerifyOptions) -> tuple[Path | None, list[Path]]:
    """The record's checkpoint: its provenance.checkpoint_path inside the repository, else
    <sha256>.safetensors in the checkpoint cache; neither reached through a link that leads out
    of its folder. Returns (the first that exists, every place looked)."""
    places = []
    if rec.provenance.checkpoint_path:
        places.append((opts.repo, opts.repo / rec.provenance.checkpoint_path))
    if opts.checkpoints and rec.provenance.checkpoint_sha256:
        places.append((opts.checkpoints, opts.checkpoints / f"{rec.provenance.checkpoint_sha256}.safetensors"))
    found = (p for folder, p in places if p.resolve().is_relative_to(folder.resolve()) and p.is_file())
    return next(found, None), [p for _, p in places]


def mean_difference_ci(claimed, fresh, confidence: float, n_boot: int = N_BOOTSTRAP) -> tuple[float, float]:
    """Percentile-bootstrap interval of mean(fresh) - mean(claimed), each resampled on its own."""
    a, b = np.asarray(claimed, dtype=float), np.asarray(fresh, dtype=float)
    rng = np.random.default_rng(0)
    diff = (b[rng.integers(0, b.size, (n_boot, b.size))].mean(1) - a[rng.integers(0, a.size, (n_boot, a.size))].mean(1))
    alpha = (1 - confidence) / 2
    return float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))


def _rows(result: EvalResult) -> int | None:
    """How many samples each of the result's lists holds (rows resampled together), None where
    they differ or there are none."""
    lengths = {len(xs) for xs in result.samples.values()}
    return lengths.pop() if len(lengths) == 1 else None


def derived_difference_ci(claimed: EvalResult, fresh: EvalResult, name: str, confidence: float,
                          n_boot: int = N_DERIVED_BOOTSTRAP) -> tuple[float, float]:
    """Percentile-bootstrap interval of fresh minus claimed for a metric that `derive` recomputes
    from the samples: each side's rows resampled on their own, the metric recomputed from each."""
    rng = np.random.default_rng(0)

    def resampled(result: EvalResult) -> float:
        columns = {k: np.asarray(v, dtype=float) for k, v in result.samples.items()}
        idx = rng.integers(0, _rows(result), _rows(result))
        return derived_metrics(result.model_copy(update={"samples": {k: c[idx].tolist() for k, c in columns.items()}}))[name]

    diff = np.array([resampled(fresh) - resampled(claimed) for _ in range(n_boot)])
    alpha = (1 - confidence) / 2
    return float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))


def budgeted(spec: Spec, tier: Tier, budget: int):
    """The tier's evaluators, with an `episodes` option cut to the CI budget."""
    out = []
    for i, e in enumerate(tier.evaluators):
        where = f"{spec.folder / 'spec.yaml'}: tiers.full.evaluators[{i}]"
        ev, _ = resolve_evaluator(e, where)
        options = dict(e.options)
        if "episodes" in ev.options.model_fields:
            options["episodes"] = min(options.get("episodes", budget), budget)
        out.append(resolve_evaluator(EvaluatorSpec(kind=e.kind, **options), where))
    return out


def claim_interval(claimed: EvalResult, fresh: EvalResult, name: str, confidence: float) -> tuple[float, float] | str:
    """The bootstrap interval of fresh minus claimed for one claimed metric, or why it has none."""
    xs, ys = claimed.samples.get(name), fresh.samples.get(name)
    if xs and ys:
        return mean_difference_ci(xs, ys, confidence)
    if name not in fresh.metrics:
        return "the re-evaluation does not report it"
    if _rows(claimed) is None or _rows(fresh) is None:
        return "no per-sample values of equal length to resample"
    try:
        return derived_difference_ci(claimed, fresh, name, confidence)
    except (KeyError, ValueError, TypeError, ZeroDivisionError):
        return "its evaluator does not recompute it from the samples"


def check_claims(claimed: EvalResult, i: int, fresh: EvalResult, opts: VerifyOptions, rep: RecordReport) -> int:
    """Test every claimed metric of one evaluation against the fresh one; returns how many passed."""
    tested = 0
    for name, value in claimed.metrics.items():
        where = f"evaluations[{i}].metrics.{name}"
        interval = claim_interval(claimed, fresh, name, opts.confidence)
        if isinstance(interval, str):
            rep.fail("re-evaluation", where, f"claimed {value:.6g}, not re-evaluated: {interval}")
            continue
        lo, hi = interval
        slack = 1e-9 * max(1.0, abs(value))
        if lo - slack <= 0 <= hi + slack:
            tested += 1
        else:
            rep.fail("re-evaluation", where, f"claimed {value:.6g}; afresh {fresh.metrics.get(name, float('nan')):.6g}, "
                                             f"and the {opts.confidence:.0%} bootstrap interval of the difference "
                                             f"[{lo:.4g}, {hi:.4g}] excludes 0")
    return tested


def reevaluate(rec: Record, spec: Spec, tier: Tier, opts: VerifyOptions, rep: RecordReport) -> None:
    ckpt, places = find_checkpoint(rec, opts)
    if ckpt is None:
        looked = ", ".join(str(p) for p in places) or "nowhere: no checkpoint_path and no --checkpoints DIR"
        rep.fail("re-evaluation", "provenance.checkpoint_sha256", f"checkpoint not found (looked in {looked})")
        return
    problem = safetensors_problem(ckpt)
    if problem:
        rep.fail("re-evaluation", "provenance.checkpoint_path", problem)
        return
    if sha256_file(ckpt) != rec.provenance.checkpoint_sha256:
        rep.fail("re-evaluation", "provenance.checkpoint_sha256", f"{ckpt} has another sha256: not this run's checkpoint")
        return
    t0 = time.perf_counter()
    resolved = resolve(spec, rec.tier, rec.arm, rec.seed)
    try:
        agent = load_agent(paper_module(resolved.module), resolved.config, ckpt, resolved.module)
    except CheckpointError as e:  # a checkpoint that does not fit the model is this record's failure
        rep.fail("re-evaluation", "provenance.checkpoint_sha256", str(e))
        return
    try:
        fresh = evaluate_agent(agent, resolved.config, budgeted(spec, tier, opts.eval_episodes))
    except Exception as e:  # noqa: BLE001 - what an invalid record claims; any other record's failure
        if rec.status != "invalid":
            raise
        rep.passed.append(f"re-evaluation (the evaluation fails again, as recorded: {type(e).__name__})")
        return
    if rec.status == "invalid":
        rep.fail("re-evaluation", "status", "'invalid' (its evaluation failed), but the checkpoint is scored afresh "
                                            "without error: the record hides a result")
        return
    before, tested = len(rep.failures), 0
    for i, claimed in enumerate(rec.evaluations):  # in the tier's order, as the runner evaluates
        if i < len(fresh) and fresh[i].evaluator == claimed.evaluator:
            tested += check_claims(claimed, i, fresh[i], opts, rep)
        else:
            rep.fail("re-evaluation", f"evaluations[{i}].evaluator", f"{claimed.evaluator!r} is not the tier's "
                                                                     f"evaluator {i + 1}: not re-evaluated")
    if len(rep.failures) == before:
        rep.passed.append(f"re-evaluation ({tested} claimed metric(s) within the {opts.confidence:.0%} bootstrap "
                          f"interval of fresh episodes, {time.perf_counter() - t0:.1f}s)")
