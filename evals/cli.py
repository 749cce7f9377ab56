"""`repro`: list, show, reproduce, evaluate and status of the papers' reproductions."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
from pathlib import Path


from evals.checkpoint import CheckpointError, load_agent, sha256_file
from evals.config import paper_module, parse_overrides, parse_seeds, resolve
from evals import paths
from evals.record import RecordError, load_record, read_records
from evals.spec import TIER_NAMES, SpecError, get_tier, load_spec, paper_ids, readable_specs, unknown_paper
from evals.status import paper_status, staleness
from evals.tier_runner import RunInProgress
from evals.summary import table, tier_summary


def _spec(paper: str):
    ids = paper_ids()
    if paper not in ids:
        raise unknown_paper(paper, ids)
    return load_spec(paper)


# -- list / show / status -----------------------------------------------------------------------
def _say_unreadable(errors: list[Exception]) -> None:
    """Name each spec or record that could not be read (the others were listed) and exit 1."""
    for e in errors:
        print(f"repro: invalid, left out: {e}", file=sys.stderr)
    if errors:
        raise SystemExit(1)


def _papers(paper: str | None) -> tuple[list, list[Exception]]:
    """The specs to list (one paper's, or every readable one) and the errors of those unreadable."""
    return ([_spec(paper)], []) if paper else readable_specs()


def _status_of(specs) -> tuple[list, list[Exception]]:
    out, invalid = [], []
    for spec in specs:
        records, bad = read_records(spec.id)
        out.append(paper_status(spec, records))
        invalid += bad
    return out, invalid


def cmd_list(args) -> None:
    specs, errors = _papers(None)
    statuses, invalid = _status_of(specs)
    rows = [{"paper": spec.id, "area": spec.area, "year": spec.year} | {ts.tier: ts.status for ts in tiers}
            for spec, tiers in zip(specs, statuses)]
    print(table(rows))
    _say_unreadable(errors + invalid)


WIDTH = 100  # `repro show` fits a 100-column terminal: long fields wrap under their label


def _field(label: str, text: str, indent: int = 4) -> str:
    """`label: text`, wrapped at WIDTH with the continuation lines under the text."""
    head = " " * indent + (f"{label}: " if label else "")
    return textwrap.fill(text, WIDTH, initial_indent=head, subsequent_indent=" " * len(head),
                         break_long_words=False, break_on_hyphens=False)


def _where(where: str) -> str:
    """The table or figure, never broken (it is what one searches the paper for): on its own line
    when it does not fit beside its label."""
    line = f"    where: {where}"
    return line if len(line) <= WIDTH else f"    where:\n      {where}"


def _published_lines(p) -> list[str]:
    value = f"{p.value:g}{' ' + p.unit if p.unit else ''}{' (approx.)' if p.approximate else ''}"
    lines = [f"  - {p.metric} {value}", _where(p.where),
             _field("setting", ", ".join(f"{k}={v}" for k, v in p.setting.items()))]
    return lines + ([_field("note", p.note)] if p.note else [])


def cmd_show(args) -> None:
    spec = _spec(args.paper)
    print(textwrap.fill(f"{spec.title} ({', '.join(spec.authors[:3])}{' et al.' if len(spec.authors) > 3 else ''}, "
                        f"{spec.year})", WIDTH))
    print(f"id: {spec.id}   area: {spec.area}   arXiv: {spec.arxiv or '-'}   builds on: {', '.join(spec.builds_on) or '-'}")
    if spec.summary:
        print(_field("", spec.summary.strip(), 0))
    print("\nPublished numbers:")
    print("  each: metric value, then where it stands (table or figure) and its setting")
    print("\n".join(line for p in spec.published for line in _published_lines(p)) or "  (none recorded yet)")
    if spec.references:
        print("\nReference reproductions (not the paper's numbers):")
        for r in spec.references:
            print(_field("", f"- {r.name}: {r.metric} {r.value:g}", 2))
            print(_field("setting", ", ".join(f"{k}={v}" for k, v in r.setting.items())))
    for name, tier in spec.tiers.items():
        print(f"\nTier {name}: seeds {tier.seeds}, evaluators {', '.join(e.kind for e in tier.evaluators) or '-'}")
        print(_field("config", json.dumps(tier.config), 2))
        for arm, a in tier.arms.items():
            extra = f" module={a.module}" if a.module else ""
            print(_field(f"arm {arm}", f"{extra} {json.dumps(a.config) if a.config else ''} {a.description or ''}".strip(), 2))
        for t in tier.targets:
            print(_field("target", f"{t.expr}  [{t.test}]", 2))
        for d in tier.deviations:
            print(_field("deviation", d, 2))
    if not spec.tiers:
        print("\nNo tiers yet: not implemented.")


def cmd_status(args) -> None:
    specs, errors = _papers(args.paper)
    statuses, invalid = _status_of(specs)
    out = [ts for tiers in statuses for ts in tiers]
    if args.json:
        print(json.dumps([ts.as_json() for ts in out], indent=1))
        _say_unreadable(errors + invalid)
        return
    rows = [{"paper": ts.paper, "tier": ts.tier, "status": ts.status, "seeds": ",".join(map(str, ts.seeds)) or "-",
             "targets": f"{ts.targets_met}/{len(ts.targets)}", "stale": len(ts.stale), "newest run": ts.newest or "-"}
            for ts in out if args.paper or ts.status != "not-implemented" or ts.tier == "mini"]
    print(table(rows))
    if args.paper:
        for ts in out:
            for t in ts.targets:
                print(f"{ts.tier}: {'MET    ' if t.met else 'NOT MET'} {t.expr} [{t.test}]: {t.detail}")
    _say_unreadable(errors + invalid)


# -- reproduce ----------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _makespan(times: list[float], n_jobs: int) -> float:
    """When the last of these runs ends, each started on the first free worker, longest first."""
    workers = [0.0] * max(1, n_jobs)
    for t in sorted(times, reverse=True):
        workers[workers.index(min(workers))] += t
    return max(workers)


def _time_estimate(paper: str, tier: str, arms: list[str], n_jobs: int) -> str:
    """How long the runs should take, from the wall times of this tier's recorded runs (an arm's
    median, or the tier's for an arm without records), saying how many records are current or stale."""
    spec = load_spec(paper)
    records = [r for r in read_records(paper, tier)[0] if r.status == "ok"]
    if not records:
        return "estimate: none, no run of this tier is recorded in results/ yet"
    by_arm: dict[str, list[float]] = {}
    for r in records:
        by_arm.setdefault(r.arm, []).append(r.provenance.wall_time_s)
    overall = statistics.median(r.provenance.wall_time_s for r in records)
    times = [statistics.median(by_arm[a]) if a in by_arm else overall for a in arms]
    stale = sum(staleness(r, spec) is not None for r in records)
    cores = sorted({str(r.provenance.hardware.get("cpu_count", "?")) for r in records})
    return (f"estimate: {_duration(sum(times))} of runs, about {_duration(_makespan(times, n_jobs))} with {n_jobs} "
            f"in parallel, from the wall times of {len(records)} recorded run(s) of this tier "
            f"({len(records) - stale} current, {stale} stale; recorded on {'/'.join(cores)} CPU cores; runs in "
            f"parallel share this machine's cores, so each may take longer)")


def cmd_reproduce(args) -> int | None:
    from evals.dry_run import DATA_MISSING
    from evals.tier_runner import RunOptions, job_list, launch, missing_data

    overrides = parse_overrides(args.set or [])
    seeds = parse_seeds(args.seeds)
    arms = [a for a in (args.arms or "").split(",") if a] or None
    _spec(args.paper)
    if args.dry_run:  # the CPU check: its exit status says ready, failed, or code fine with data missing
        from evals.dry_run import dry_run

        return dry_run(args.paper, args.tier, seeds, arms, overrides)
    get_tier(load_spec(args.paper), args.tier)
    if args.nproc > 1:  # data parallel: the same command under torchrun (evals/distributed.py)
        from evals.distributed import launch as launch_distributed

        if launch_distributed(args):
            raise SpecError(f"{args.paper}/{args.tier}: a process of the --nproc {args.nproc} run failed (see above)")
        return
    jobs = job_list(args.paper, args.tier, seeds, arms, overrides)
    missing = missing_data(jobs)
    if missing:
        print(f"{args.paper}/{args.tier}: no run started, data missing on this machine (exit {DATA_MISSING}):\n  "
              + "\n  ".join(missing) + f"\n`repro reproduce {args.paper} --tier {args.tier} --dry-run` checks the code "
              "on stand-ins.", file=sys.stderr)
        return DATA_MISSING
    opts = RunOptions(device=args.device, deterministic=args.deterministic, threads=args.threads,
                      checkpoint_every=args.checkpoint_every, resume=args.resume, progress=not args.no_progress)
    print(f"{args.paper}/{args.tier}: {len(jobs)} run(s) ({', '.join(f'{j.arm}:{j.seed}' for j in jobs)}), "
          f"launcher {args.launcher}, {args.jobs} in parallel", file=sys.stderr)
    print(_time_estimate(args.paper, args.tier, [j.arm for j in jobs], args.jobs), file=sys.stderr)
    paths = launch(jobs, overrides, opts, n_jobs=args.jobs, launcher=args.launcher)
    print(tier_summary(args.paper, args.tier, paths))


# -- evaluate -----------------------------------------------------------------------------------
def _locate_run(target: Path) -> tuple[dict, Path]:
    """(run.json contents, checkpoint) for a run dir, a record, or a checkpoint inside a run dir."""
    if target.suffix == ".json" and target.is_file() and target.name != "run.json":
        record = load_record(target)
        if not record.provenance.checkpoint_path:
            raise RecordError(f"{target}: field 'provenance.checkpoint_path': the run saved no checkpoint")
        ckpt = paths.runs_dir().parent / record.provenance.checkpoint_path  # relative to where runs/ lies
        if not ckpt.is_file():
            raise CheckpointError(f"{target}: checkpoint {ckpt} is not on this machine (heavy artifacts stay in runs/)")
        if sha256_file(ckpt) != record.provenance.checkpoint_sha256:
            raise CheckpointError(f"{ckpt}: sha256 differs from the record's provenance.checkpoint_sha256")
        return {"paper": record.paper, "tier": record.tier, "arm": record.arm, "seed": record.seed,
                "config": record.config}, ckpt
    run_dir = target if target.is_dir() else target.parent
    for d in (run_dir, run_dir.parent):
        if (d / "run.json").is_file():
            ckpt = target if target.is_file() else d / "final.safetensors"
            if not ckpt.is_file():
                raise CheckpointError(f"{d}: no final.safetensors (did the run finish?)")
            return json.loads((d / "run.json").read_text()), ckpt
    raise CheckpointError(f"{target}: not a run directory, a record, or a checkpoint inside a run directory")


def cmd_evaluate(args) -> None:
    from evals.tier_runner import evaluate_agent, evaluators_for

    info, ckpt = _locate_run(Path(args.run))
    spec = load_spec(info["paper"])
    resolved = resolve(spec, info["tier"], info["arm"], info["seed"], info["config"])
    agent = load_agent(paper_module(resolved.module), resolved.config, ckpt,
                       f"{resolved.module} ({info['arm']}, seed {info['seed']})")
    results = evaluate_agent(agent, resolved.config, evaluators_for(info["paper"], info["tier"]))
    if args.json:
        print(json.dumps([r.model_dump() for r in results], indent=1))
        return
    print(f"{info['paper']}/{info['tier']} {info['arm']} seed {info['seed']}: {ckpt}")
    for r in results:
        print(f"  {r.evaluator} v{r.version}: " + ", ".join(f"{k}={v:.4g}" for k, v in r.metrics.items()))
        print(f"    protocol: {json.dumps(r.protocol)}")


# -- entry point --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="repro", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every paper with its area and status per tier").set_defaults(fn=cmd_list)
    s = sub.add_parser("show", help="a paper's spec: published numbers, tiers, targets")
    s.add_argument("paper")
    s.set_defaults(fn=cmd_show)
    s = sub.add_parser("status", help="status per paper and tier, derived from results/")
    s.add_argument("paper", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    s = sub.add_parser("reproduce", help="run a tier: train, evaluate, check targets, write records")
    s.add_argument("paper")
    s.add_argument("--tier", default="mini", choices=TIER_NAMES)
    s.add_argument("--seeds", help="comma-separated, default: the spec's")
    s.add_argument("--arms", help="comma-separated, default: all of the tier's arms")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    s.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    s.add_argument("--deterministic", action="store_true", help="torch deterministic algorithms")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    s.add_argument("--jobs", type=int, default=1, help="runs in parallel (local processes)")
    s.add_argument("--nproc", type=int, default=1, help="data-parallel processes per run (torchrun, DDP)")
    s.add_argument("--launcher", default="local", choices=("local", "slurm", "submitit-local"))
    s.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS")
    s.add_argument("--resume", action="store_true", help="finish an interrupted run from its newest checkpoint")
    s.add_argument("--dry-run", action="store_true",
                   help="the CPU check, no run: resolve, check the data (stand-ins where it is missing), build, one "
                        "step, each evaluator on a tiny budget; exit 0 ready, 1 failed, 2 invalid, 3 code fine but "
                        "data missing (evals/dry_run.py)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_reproduce)
    s = sub.add_parser("evaluate", help="re-run the spec's evaluators on a saved run or checkpoint")
    s.add_argument("run", help="a run directory under runs/, a record under results/, or a .safetensors in a run dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_evaluate)
    from evals.recertify import add_parser as add_recertify_parser
    from evals.scaffold import add_parser as add_new_parser
    from evals.verify import add_parser as add_verify_parser
    add_verify_parser(sub)
    add_recertify_parser(sub)
    add_new_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.fn(args)
    except (SpecError, RecordError, CheckpointError, RunInProgress) as e:
        print(f"repro: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("repro: interrupted (checkpoints, if any, are kept; rerun with --resume)", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
