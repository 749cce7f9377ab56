"""`repro verify`: re-check contributed run records before they count (CONTRIBUTING.md).

1. schema: a valid record of sane size at results/<paper>/<tier>/<run_id>.json, its paper, tier,
   arm, seed and config those of the spec;
2. provenance: its revision is in the history, the paper's source hash at that revision is the
   record's, package versions are recorded;
3. consistency: metrics recompute from the per-episode values, target checks from the spec,
   curves ordered, timestamps sane, run ids unique, each seed run once;
4. re-execution (smoke, mini): the run, to the end (within a budget; beyond it a draw the
   contributor cannot choose decides which records run to the end and which up to their tier's
   `verify_steps`: evals/verify/plan.py), run again on the CPU gives the status, the metrics, the
   per-sample values and the logged values;
5. re-evaluation (full): the checkpoint (safetensors, by sha256) scored afresh supports the claim;
6. stale records (the code or spec moved on) are reported as warnings: kept, not counted.
"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path

from evals import paths
from evals.record import Record, RecordError, load_record
from evals.spec import SpecError, load_spec
from evals.status import SOURCE_CHANGED, staleness, tier_status
from evals.verify import checks
from evals.verify.across import Known, check_across, index
from evals.verify.plan import Plan, plan_reexecution
from evals.verify.repo import SelectionError, VerifyOptions, all_records, changed_records, read_at, rotating_sample
from evals.verify.report import RecordReport, Report, shown
from evals.verify.rerun import reevaluate, reexecute
from evals.verify.tree import tree_paths, tree_reports

__all__ = ["VerifyOptions", "verify", "add_parser"]


def _stale_field(why: str) -> str:
    if why.startswith("made under spec version"):
        return "provenance.spec_version"
    return "evaluations" if why.startswith("evaluator") else "provenance.source_hash"


def verify_record(path: Path, opts: VerifyOptions, known: list[Known], rerun: bool, whole: bool) -> RecordReport:
    rep = RecordReport(path)
    rec = checks.load_checked(path, rep)
    if rec is None:
        return rep
    checks.check_place(rec, path, opts, rep)
    checks.check_images(path, rep)
    found = checks.check_spec(rec, rep, opts.repo)
    checks.check_provenance(rec, path, opts, rep)
    checks.check_metrics(rec, rep)
    checks.check_curves(rec, rep)
    checks.check_comparable(rec, rep)
    checks.check_times(rec, rep)
    why = staleness(rec, found[0]) if found else None
    if why:  # checks against today's spec and code do not apply to a record that predates them
        rep.warn("stale", _stale_field(why), f"{why}: kept and shown, not counted; {_remedy(rec, why)}")
    elif found:
        checks.check_config(rec, found[0], rep)
        checks.check_evaluations(rec, *found, rep)
        checks.check_targets(rec, rep)
    check_across(rec, path, bool(found) and not why, known, opts.repo, rep)
    if not rep.failures:
        rep.passed.append("schema, provenance, consistency")
    if found and rerun:
        _rerun(rec, *found, opts, rep, stale=bool(why), whole=whole)
    return rep


def _remedy(rec: Record, why: str) -> str:
    """What makes a stale record count again: a smoke or mini record staled by code alone may be
    recertified (re-executed with today's code, kept where its numbers repeat); else a re-run."""
    if why.startswith(SOURCE_CHANGED) and rec.tier in ("smoke", "mini"):
        return (f"`repro recertify {rec.paper} --tier {rec.tier}` keeps it if today's code repeats its numbers "
                "bit for bit; otherwise re-run it to count")
    return "re-run it to count"


def _rerun(rec: Record, spec, tier, opts: VerifyOptions, rep: RecordReport, stale: bool, whole: bool) -> None:
    full = rec.tier == "full"
    what = "re-evaluation" if full else "re-execution"
    if stale:
        rep.passed.append(f"no {what}: the record is stale (today's code would not be its code)")
    elif rep.failures:
        rep.passed.append(f"no {what}: the checks above failed")
    elif full and rec.status == "failed":
        rep.passed.append("no re-evaluation: the run diverged ('failed'), with no checkpoint to score")
    else:
        try:
            if full:
                reevaluate(rec, spec, tier, opts, rep)
            else:
                reexecute(rec, spec, tier, opts, rep, whole=whole)
        except Exception as e:  # noqa: BLE001 - a run that cannot be repeated is this record's failure
            rep.fail(what, "(run)", f"{type(e).__name__}: {e}")


def status_lines(reports: list[RecordReport], known: list[Known]) -> list[str]:
    """The status of each (paper, tier) the records touch, with the seeds it rests on (a status
    other than 'implemented' needs the spec's minimum number of seeds for every arm it names)."""
    touched = sorted({(k.record.paper, k.record.tier) for k in known if k.path in {r.path.resolve() for r in reports}})
    lines = []
    for paper, tier_name in touched:
        try:
            spec = load_spec(paper)
        except SpecError:
            continue
        tier = spec.tiers.get(tier_name)
        if tier is None:
            continue
        ts = tier_status(spec, tier_name, [k.record for k in known if (k.record.paper, k.record.tier) == (paper, tier_name)])
        tried = {arm: sorted({r.seed for r in ts.records if r.arm == arm and r.status in ("ok", "failed")}) for arm in tier.arms}
        seeds = ", ".join(f"{arm} {len(s)}/{tier.required_seeds}" for arm, s in tried.items())
        lines.append(f"status {paper}/{tier_name}: {ts.status} (seeds per arm: {seeds}; {len(ts.stale)} stale record(s))")
    return lines


def _guarded(path: Path, opts: VerifyOptions, known: list[Known], rerun: bool, whole: bool) -> RecordReport:
    """One record's report; a crash of the checks themselves is reported, not raised, so that it
    cannot hide the other records' reports."""
    try:
        return verify_record(path, opts, known, rerun, whole)
    except Exception as e:  # noqa: BLE001
        rep = RecordReport(path)
        rep.fail("verify", "(record)", f"the checks crashed: {type(e).__name__}: {e}")
        return rep


def verify(paths: list[Path], opts: VerifyOptions = VerifyOptions(), sample: int = 0,
           today: date | None = None, progress: bool = False) -> Report:
    """Verify `paths`; with `sample`, re-execute / re-evaluate only a rotating sample of them.
    `progress` says on stderr which record is being checked (re-runs take a while)."""
    t0 = time.perf_counter()
    paths = [Path(p) for p in paths]
    known = index(sorted({p.resolve() for p in [*all_records(opts), *paths]}))
    rerun = set(rotating_sample(paths, sample, today) if sample else paths) if opts.rerun else set()
    plan = _plan(rerun, known, opts)
    report = Report(plan=plan.lines)
    for i, p in enumerate(paths):
        if progress:
            print(f"verify: [{i + 1}/{len(paths)}] {shown(p)}", file=sys.stderr, flush=True)
        report.records.append(_guarded(p, opts, known, p in rerun, plan.runs_whole(p)))
    report.status = status_lines(report.records, known)
    report.elapsed_s = time.perf_counter() - t0
    return report


def _plan(rerun: set[Path], known: list[Known], opts: VerifyOptions) -> Plan:
    """How far each smoke and mini record to re-run is re-executed (evals/verify/plan.py)."""
    wanted = {p.resolve() for p in rerun}
    return plan_reexecution({k.path: k.record for k in known if k.path in wanted and k.record.tier != "full"}, opts)


def recertification_problem(before: Record, after: Record) -> str | None:
    """Why `after` is not `before` plus recertifications (None when it is): with the new links
    undone, the record must be the committed one, field for field."""
    k = len(before.provenance.recertified)
    added = after.provenance.recertified[k:]
    if not added:
        return "no recertification was added"
    module = after.module_chain()[k]  # the module before the new links (one of them may have moved it)
    undone = after.model_copy(update={"module": module, "provenance": after.provenance.model_copy(update={
        "source_hash": added[0].previous_source_hash, "source_files": added[0].previous_source_files,
        "recertified": after.provenance.recertified[:k]})})
    if undone != before:
        changed = sorted(name for name in Record.model_fields if getattr(undone, name) != getattr(before, name))
        return f"besides its recertification, {', '.join(changed)} changed"
    return None


def _history(report: Report, opts: VerifyOptions, edited: list[tuple[str, str]], base: str) -> None:
    """A record that `base` has may only gain recertifications (`repro recertify`): any other edit,
    and any deletion, is refused."""
    by_path = {r.path.resolve(): r for r in report.records}
    for rel, change in edited:
        path = (opts.repo / rel).resolve()
        rep = by_path.get(path) or RecordReport(path)
        if path not in by_path:
            report.records.append(rep)
        problem = "it was deleted"
        if change == "M":
            try:
                before = Record.model_validate_json(read_at(opts.repo, base, rel) or b"")
                problem = recertification_problem(before, load_record(path))
            except (ValueError, RecordError) as e:
                problem = f"it was edited ({e})"
            if problem is None:
                rep.passed.append(f"history: recertified since {base}, otherwise as committed")
                continue
        rep.fail("history", "(file)", f"{base} has this record and {problem}: a committed record is never edited "
                                      "or deleted, only recertified (a record whose code moved on goes stale by itself)")


def cmd_verify(args) -> None:
    opts = VerifyOptions(results=Path(args.results).absolute(), rerun=not args.no_rerun, rtol=args.rtol,
                         checkpoints=Path(args.checkpoints).absolute() if args.checkpoints else None,
                         eval_episodes=args.eval_episodes, budget_s=args.budget_min * 60, draw_seed=args.draw_seed)
    try:
        if args.records:
            paths, edited, other = [Path(p) for p in args.records], [], []
        elif args.all:
            paths, edited, other = all_records(opts), [], tree_paths(opts.results)
        else:
            changes = changed_records(opts, args.base)
            paths, edited, other = changes.records, changes.edited, changes.other
        report = verify(paths, opts, args.sample, date.today() if args.rotate_by_date else date.min, progress=True)
    except SelectionError as e:
        print(f"repro: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    report.records += tree_reports(opts.results, other)
    _history(report, opts, edited, args.base)
    print(report.as_json() if args.json else report.text())
    if not report.ok:
        raise SystemExit(1)


def add_parser(sub) -> None:
    s = sub.add_parser("verify", help="re-check run records before they count: schema, provenance, "
                                      "consistency, re-execution / re-evaluation")
    s.add_argument("records", nargs="*", metavar="RECORD", help="record files (default: those that differ from --base)")
    s.add_argument("--all", action="store_true", help="every record under results/")
    s.add_argument("--base", default="main", help="the branch or revision to compare with (default: main)")
    s.add_argument("--json", action="store_true", help="a machine-readable report")
    s.add_argument("--no-rerun", action="store_true", help="skip re-execution and re-evaluation")
    s.add_argument("--sample", type=int, default=0, metavar="N",
                   help="re-execute / re-evaluate only N of the records (the others get the static checks)")
    s.add_argument("--rotate-by-date", action="store_true", help="with --sample: a different window of records each week")
    s.add_argument("--checkpoints", metavar="DIR", help="a cache of <sha256>.safetensors for full-tier re-evaluation")
    s.add_argument("--results", default=str(paths.results_dir()), metavar="DIR",
                   help="the results folder (default: results/, or $REPRO_RESULTS)")
    s.add_argument("--rtol", type=float, default=VerifyOptions.rtol,
                   help=f"relative tolerance of re-executed values (default {VerifyOptions.rtol:g})")
    s.add_argument("--eval-episodes", type=int, default=VerifyOptions.eval_episodes, metavar="N",
                   help="full-tier re-evaluation budget per evaluator")
    s.add_argument("--budget-min", type=float, default=VerifyOptions.budget_s / 60, metavar="MIN",
                   help="re-execute every record to the end while their recorded wall times add up to at most this; "
                        f"beyond it, a seeded draw picks those run to the end (default {VerifyOptions.budget_s / 60:g})")
    s.add_argument("--draw-seed", metavar="TEXT", help="the seed of that draw (default: the HEAD revision; "
                                                       "CI passes the merge commit it builds)")
    s.set_defaults(fn=cmd_verify)
