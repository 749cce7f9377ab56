"""`repro recertify [PAPER]`: carry records across a change of code that alters no number.

A record counts while its paper's source hash is today's (evals/status.py). Moving or tidying
code changes that hash and stales every record, though no number changed. Recertification
re-executes each stale smoke or mini record in full with today's code, on the CPU in
deterministic mode, and compares status, metrics, per-episode values and every logged value with
zero tolerance (the timings the tier names in `verify_timings` excepted, as in `repro verify`).
Where every value is bit-identical it rewrites the record's `source_hash` and `source_files` to
today's and appends a `Recertification` to `provenance.recertified`: the hash it replaced and the
revision whose code gave the same bits. Nothing else of the record changes; `repro verify`
checks that (against the record as first committed) and checks the chain link by link. A record
whose numbers change is not recertified: re-run it.

A record whose arm the spec has moved to another module (a module renamed, or folded into
another) is re-executed with today's module, as any stale record is; where its numbers repeat, its
`module` becomes today's too and the link names the one it replaced (`previous_module`), so that
each link of the chain is checked against the module that revision ran.

Records staled by a new spec version or evaluator version are not recertifiable (their config or
their scoring changed): re-run them. Full-tier records are never re-executed here (a GPU run).
The code must be committed first, so that the revision named is the code that ran.

A record made on another kind of CPU may not re-execute bit for bit here at all (an AMD EPYC's
runs did not on an Intel Xeon: MKL and oneDNN pick their blocking by the CPU). With
`--same-machine`, such a record is recertified when the record's own code (a git worktree of the
commit that holds it) and today's code, both re-executed here in full, give identical values.
That proves what recertification claims, that the code change altered no number, without this
machine having to repeat the record; it does not re-check the record's numbers against its own
run, which `repro verify` did when the record landed and CI's weekly job repeats. The link's
`checked` says which of the two comparisons was made.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from evals import CPU_ISA_PIN, paths, provenance
from evals.record import Recertification, Record, RecordError, load_record, now_iso, record_files, rewrite_record
from evals.spec import SpecError, get_tier, load_spec, paper_ids, unknown_paper
from evals.status import SOURCE_CHANGED, arm_module, current_source_hash, staleness
from evals.verify.repo import VerifyOptions, added_in, read_at
from evals.verify.report import RecordReport, shown
from evals.verify.rerun import compare_curves, compare_names, compare_whole, reexecute, without_timings

EXACT = VerifyOptions(rtol=0.0, atol=0.0)


@dataclass
class Outcome:
    path: Path
    result: str  # recertified | current | changed | not-recertifiable
    detail: str
    seconds: float = 0.0


def _source_hash_reason(why: str | None) -> bool:
    return why is not None and why.startswith(SOURCE_CHANGED)  # the arm's module moved, or its files changed


def recertify_record(path: Path, revision: str, same_machine: bool = False) -> Outcome:
    """Re-execute one record in full and, where every value is identical, rewrite its hash. With
    `same_machine`, a record that this machine does not re-execute bit for bit (it was made on
    another kind of CPU) is recertified when the record's own code, run here, gives what today's
    code gives here."""
    t0 = time.perf_counter()
    rec = load_record(path)
    spec = load_spec(rec.paper)
    why = staleness(rec, spec)
    if why is None:
        return Outcome(path, "current", "current already")
    if not _source_hash_reason(why):
        return Outcome(path, "not-recertifiable", f"{why}: re-run it")
    if rec.tier == "full":
        return Outcome(path, "not-recertifiable", "a full-tier record is not re-executed here: re-run it on a GPU")
    tier = get_tier(spec, rec.tier)
    rep = RecordReport(path)
    fresh = None
    try:
        fresh = reexecute(rec, spec, tier, EXACT, rep, whole=True)
    except Exception as e:  # noqa: BLE001 - a run that cannot be repeated is not recertified
        rep.fail("re-execution", "(run)", f"{type(e).__name__}: {e}")
    if rep.failures and same_machine and fresh is not None:
        try:
            rep = against_own_code(rec, fresh, tier, path)
        except (RuntimeError, RecordError, subprocess.CalledProcessError) as e:  # the record's own code did not run
            rep = RecordReport(path)
            rep.fail("re-execution", "(own code)", str(e))
    seconds = time.perf_counter() - t0
    if rep.failures:
        return Outcome(path, "changed", "; ".join(f"{f.field}: {f.reason}" for f in rep.failures[:3]), seconds)
    module = arm_module(spec, rec)  # the re-execution ran the spec's module for the arm
    files = provenance.source_files(module)
    p = rec.provenance
    moved = module != rec.module
    checked = rep.passed[-1] + (f"; module {rec.module} -> {module}" if moved else "")
    link = Recertification(previous_source_hash=p.source_hash, previous_source_files=p.source_files,
                           revision=revision, at=now_iso(), checked=checked,
                           previous_module=rec.module if moved else None)
    new = rec.model_copy(update={"module": module, "provenance": p.model_copy(update={
        "source_hash": provenance.hash_files(files), "source_files": sorted(files),
        "recertified": [*p.recertified, link]})})
    rewrite_record(new, path)
    return Outcome(path, "recertified", checked, seconds)


def code_revision(rec: Record, path: Path) -> str:
    """The commit holding the code that made `rec`'s numbers under its source hash: the commit that
    added the record, where its code hashes to the record's (it also holds the spec the run used,
    which a run made from uncommitted files may not have had at its git_revision), else the
    record's git_revision, else the revision that last recertified it."""
    at = lambda r: provenance.hash_files(provenance.source_files(rec.module, read=lambda rel: read_at(paths.ROOT, r, rel)))
    p = rec.provenance
    candidates = [added_in(paths.ROOT, path), p.git_revision] + [r.revision for r in p.recertified[-1:]]
    for rev in filter(None, candidates):
        if at(rev) == p.source_hash:
            return rev
    raise RecordError(f"{path}: no commit holds the code that made it (source_hash {rec.provenance.source_hash[:12]}…)")


def run_at(revision: str, rec: Record, scratch: Path) -> Record:
    """Re-execute `rec`'s (arm, seed) in full with the code of `revision` (a git worktree of it,
    its own harness and CLI), deterministic, on the CPU, with this process's kernel pins."""
    tree = scratch / "tree"
    git = lambda *a: subprocess.run(["git", *a], cwd=paths.ROOT, capture_output=True, text=True, check=True)
    git("worktree", "add", "--detach", str(tree), revision)
    try:
        env = {**os.environ, **{k: os.environ.get(k, v) for k, v in CPU_ISA_PIN.items()},
               "PYTHONPATH": str(tree), "REPRO_RESULTS": str(tree / "results"), "REPRO_RUNS": str(tree / "runs")}
        for old in (tree / "results" / rec.paper / rec.tier).glob("*.json"):
            old.unlink()  # the tree's committed records: only the re-execution's stays
        threads = str(int(rec.provenance.hardware.get("torch_threads", 1)))
        cmd = [sys.executable, "-m", "evals.cli", "reproduce", rec.paper, "--tier", rec.tier, "--seeds", str(rec.seed),
               "--arms", rec.arm, "--device", "cpu", "--deterministic", "--threads", threads, "--no-progress"]
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        made = sorted((tree / "results" / rec.paper / rec.tier).glob("*.json"))
        if done.returncode != 0 or len(made) != 1:
            raise RuntimeError(f"the code of {revision[:12]} did not re-execute it: {done.stderr.strip()[-500:]}")
        return load_record(made[0])
    finally:
        git("worktree", "remove", "--force", str(tree))


def against_own_code(rec: Record, fresh: Record, tier, path: Path) -> RecordReport:
    """Compare today's re-execution with the record's own code re-executed here, bit for bit."""
    rep = RecordReport(path)
    revision = code_revision(rec, path)
    with tempfile.TemporaryDirectory(prefix="repro-recertify-") as tmp:
        own, _ = without_timings(run_at(revision, rec, Path(tmp)), tier.verify_timings)
    note = f" (today's code against {revision[:12]}'s, both here)"
    compare_names(own, fresh, rep, note)
    compare_whole(own, fresh, EXACT, rep, note)
    matched = compare_curves(own, fresh, EXACT, rep, note)
    if not rep.failures:
        cpu = provenance.hardware("cpu")["cpu"]
        rep.passed.append(f"re-execution (whole run by the record's own code at {revision[:12]} and by today's code, "
                          f"both on {cpu}: {matched} logged values, the metrics and per-episode values identical; "
                          f"the record was made on {rec.provenance.hardware.get('cpu', '?')})")
    return rep


def committed_revision(modules: set[str]) -> str:
    """HEAD, when the hashed source files of `modules` in the work tree are HEAD's; else an error
    (a recertification names the revision whose code ran)."""
    rev = provenance.git("rev-parse", "HEAD")
    if not rev:
        raise SpecError("repro recertify: not in a git checkout (a recertification names the commit whose code ran)")
    for module in sorted(modules):
        at_head = provenance.hash_files(provenance.source_files(module, read=lambda rel: read_at(paths.ROOT, rev, rel)))
        if at_head != current_source_hash(module):
            raise SpecError(f"repro recertify: {module}'s source files differ from HEAD ({rev[:12]}): commit them first")
    return rev


def stale_records(paper: str | None, tier: str | None, results: Path | None = None) -> list[Path]:
    """The records whose only staleness is their source hash, cheapest first (by recorded wall time)."""
    out = []
    for path in record_files(paper, tier, results):
        try:
            rec = load_record(path)
            why = staleness(rec, load_spec(rec.paper))
        except (RecordError, SpecError) as e:
            print(f"recertify: skipped {shown(path)}: {e}", file=sys.stderr)
            continue
        if _source_hash_reason(why) and rec.tier != "full":
            out.append((rec.provenance.wall_time_s, path))
    return [p for _, p in sorted(out)]


def cmd_recertify(args) -> None:
    if args.paper and args.paper not in paper_ids():
        raise unknown_paper(args.paper, paper_ids())
    todo = [Path(p) for p in args.records] if args.records else stale_records(args.paper, args.tier)
    if not todo:
        print("recertify: no stale smoke or mini record to recertify")
        return
    revision = committed_revision({_module_today(p) for p in todo})
    print(f"recertify: {len(todo)} record(s) at {revision[:12]}, {args.jobs} at a time", file=sys.stderr, flush=True)
    outcomes: list[Outcome] = []
    if args.jobs <= 1:
        for i, p in enumerate(todo):
            print(f"recertify: [{i + 1}/{len(todo)}] {shown(p)}", file=sys.stderr, flush=True)
            outcomes.append(recertify_record(p, revision, args.same_machine))
            _say(outcomes[-1])
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(recertify_record, p, revision, args.same_machine) for p in todo]
            for f in as_completed(futures):
                outcomes.append(f.result())
                _say(outcomes[-1])
    counts = {r: sum(o.result == r for o in outcomes) for r in ("recertified", "changed", "not-recertifiable", "current")}
    print("recertify: " + ", ".join(f"{n} {r}" for r, n in counts.items() if n))
    if counts["changed"] or counts["not-recertifiable"]:
        raise SystemExit(1)


def _module_today(path: Path) -> str:
    """The module a record's re-execution runs: its arm's in today's spec."""
    rec = load_record(path)
    try:
        return arm_module(load_spec(rec.paper), rec)
    except SpecError:
        return rec.module


def _say(o: Outcome) -> None:
    print(f"{o.result:<17} {shown(o.path)}: {o.detail}" + (f" ({o.seconds:.0f}s)" if o.seconds else ""), flush=True)


def add_parser(sub) -> None:
    s = sub.add_parser("recertify", help="re-execute stale records with today's code; where every value is "
                                         "identical, move them to today's source hash")
    s.add_argument("paper", nargs="?", help="only this paper's records (default: every paper's)")
    s.add_argument("--tier", choices=("smoke", "mini"), help="only this tier's records")
    s.add_argument("--records", nargs="+", default=[], metavar="RECORD", help="these record files")
    s.add_argument("--jobs", type=int, default=1, help="re-executions in parallel (local processes)")
    s.add_argument("--same-machine", action="store_true",
                   help="where the record does not re-execute bit for bit here (made on another kind of CPU), "
                        "compare today's code with the record's own code, both re-executed here")
    s.set_defaults(fn=cmd_recertify)
