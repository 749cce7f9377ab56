"""The checks that read a record without running anything: schema, provenance, consistency.

Each adds findings to the record's report naming the field and the reason; none stops at the
first problem, so a contributor sees everything wrong with a record at once.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from evals import provenance
from evals.config import resolve
from evals.evaluators import derived_metrics, registered_version, resolve_evaluator
from evals.record import MAX_CURVE_POINTS, Record, RecordError, image_problem, load_record
from evals.tier_runner import _own_target_checks
from evals.spec import SpecError, Spec, Tier, load_spec
from evals.verify.repo import VerifyOptions, added_in, has_commit, is_ancestor, read_at
from evals.verify.report import RecordReport

MAX_RECORD_BYTES = 2 * 1024 * 1024
REQUIRED_PACKAGES = ("python", "torch")
CLOCK_SKEW = timedelta(minutes=5)  # how far in the future a timestamp may lie (clocks differ)
TIME_SLACK_S = 2.0                 # timestamps have whole seconds; durations are rounded to ms
EXACT = dict(rel_tol=1e-9, abs_tol=1e-9)  # a number written by the harness, read back from JSON
HEX64 = re.compile(r"^[0-9a-f]{64}$")
STAMP = re.compile(r"-(\d{8}T\d{6})-[0-9a-f]{6}$")


# -- 1. schema ------------------------------------------------------------------------------
def load_checked(path: Path, rep: RecordReport) -> Record | None:
    """Size limit, then JSON and the record schema (evals.record.load_record)."""
    try:
        size = path.stat().st_size
    except OSError as e:
        rep.fail("schema", "(file)", f"cannot read: {e.strerror}")
        return None
    if size > MAX_RECORD_BYTES:
        rep.fail("schema", "(file)", f"{size:,} bytes, over the {MAX_RECORD_BYTES:,}-byte limit of a record "
                                     "(curves are thinned, checkpoints and logs stay in runs/)")
        return None
    try:
        rec = load_record(path)
    except RecordError as e:
        msg = str(e).removeprefix(f"{path}: ")
        m = re.match(r"field '([^']*)': (.*)$", msg, re.S)
        rep.fail("schema", m.group(1) if m else "(file)", m.group(2) if m else msg)
        return None
    rep.run_id = rec.run_id
    return rec


def check_place(rec: Record, path: Path, opts: VerifyOptions, rep: RecordReport) -> None:
    """The file lies at results/<paper>/<tier>/<run_id>.json, and the run id names the run."""
    results = opts.results.resolve()
    real = path.resolve()
    if path.is_symlink() or not real.is_relative_to(results):
        rep.fail("schema", "(path)", f"lies outside {results}: records live in results/<paper>/<tier>/")
        return
    parts = real.relative_to(results).parts
    if len(parts) != 3:
        rep.fail("schema", "(path)", f"expected results/<paper>/<tier>/<run_id>.json, got results/{'/'.join(parts)}")
        return
    for field_, have, want in (("paper", parts[0], rec.paper), ("tier", parts[1], rec.tier),
                               ("run_id", parts[2], f"{rec.run_id}.json")):
        if have != want:
            rep.fail("schema", field_, f"the record says {want!r} but lies under {have!r}")
    if rec.status == "prefix":
        rep.fail("schema", "status", "'prefix': a verification re-execution's partial run, not a result")
    prefix = f"{rec.paper}-{rec.tier}-{rec.arm}-s{rec.seed}-"
    if not rec.run_id.startswith(prefix) or not STAMP.search(rec.run_id):
        rep.fail("schema", "run_id", f"{rec.run_id!r} is not <paper>-<tier>-<arm>-s<seed>-<UTC time>-<hex6>; "
                                     f"expected to start with {prefix!r}")


def check_images(path: Path, rep: RecordReport) -> None:
    """The folder beside a record, if any, holds only the images its run published."""
    folder = path.with_suffix("")
    if folder.is_dir() and not folder.is_symlink():
        for f in sorted(folder.iterdir()):
            why = image_problem(f)
            if why:
                rep.fail("schema", f"(images) {folder.name}/", why)
    elif folder.exists():
        rep.fail("schema", f"(images) {folder.name}", "beside a record may lie only a folder of its images")


def check_spec(rec: Record, rep: RecordReport, repo: Path | None = None) -> tuple[Spec, Tier] | None:
    """The paper, tier, arm and seed exist in the spec, and the module is the arm's: today's, or
    (for a record whose arm the spec has moved to another module since, which is stale until
    `repro recertify` carries it over) the spec's at a revision of the record's hash chain."""
    try:
        spec = load_spec(rec.paper)
    except SpecError as e:
        rep.fail("schema", "paper", str(e))
        return None
    tier = spec.tiers.get(rec.tier)
    if tier is None:
        rep.fail("schema", "tier", f"paper {rec.paper!r} has no tier {rec.tier!r} (tiers: {', '.join(spec.tiers) or 'none'})")
        return None
    if rec.arm not in tier.arms:
        rep.fail("schema", "arm", f"tier {rec.tier!r} has no arm {rec.arm!r} (arms: {', '.join(tier.arms)})")
        return None
    if rec.seed not in tier.seeds:
        rep.fail("schema", "seed", f"seed {rec.seed} is not among the spec's seeds {tier.seeds} (seeds are fixed before running)")
    module = tier.arms[rec.arm].module or spec.module
    if rec.module != module and not (repo is not None and _ran_there(rec, repo)):
        rep.fail("schema", "module", f"{rec.module!r}, but arm {rec.arm!r} runs {module!r}")
    if rec.provenance.spec_version > spec.version:
        rep.fail("schema", "provenance.spec_version", f"{rec.provenance.spec_version}, newer than the spec ({spec.version})")
    check_evaluator_versions(rec, rep)
    return spec, tier


def _ran_there(rec: Record, repo: Path) -> bool:
    """Whether the spec named `rec.module` for the record's arm at a revision of its hash chain
    (the run's own, or one that recertified it): a module the arm has moved away from since."""
    for rev, _, _ in rec.provenance.hash_chain():
        text = read_at(repo, rev, f"reproductions/{rec.paper}/spec.yaml") if rev and has_commit(repo, rev) else None
        try:
            data = yaml.safe_load(text) if text else None
            arm = (data["tiers"][rec.tier].get("arms") or {"ours": {}})[rec.arm] or {}
        except (yaml.YAMLError, KeyError, TypeError):
            continue
        if isinstance(arm, dict) and (arm.get("module") or data.get("module") or f"reproductions.{rec.paper}") == rec.module:
            return True
    return False


def check_evaluator_versions(rec: Record, rep: RecordReport) -> None:
    """No evaluation claims an evaluator this code does not have, or a version of it from the future
    (an older version is only stale)."""
    for i, ev in enumerate(rec.evaluations):
        have = registered_version(ev.evaluator)
        if have is None:
            rep.fail("schema", f"evaluations[{i}].evaluator", f"{ev.evaluator!r} is no evaluator of this code")
        elif ev.version > have:
            rep.fail("schema", f"evaluations[{i}].version", f"{ev.evaluator} v{ev.version}, newer than this code's "
                                                            f"v{have}: a version from the future")


def check_config(rec: Record, spec: Spec, rep: RecordReport) -> None:
    """The run's config is the tier's, as the spec resolves it for this arm (no overrides)."""
    try:
        want = json.loads(json.dumps(resolve(spec, rec.tier, rec.arm, rec.seed).config_dict))
    except SpecError as e:
        rep.fail("schema", "config", f"cannot resolve the spec's config: {e}")
        return
    for key in sorted(set(want) | set(rec.config)):
        if key not in want:
            rep.fail("schema", f"config.{key}", "not a field of the paper's Config")
        elif rec.config.get(key, "(missing)") != want[key]:
            rep.fail("schema", f"config.{key}", f"{rec.config.get(key, '(missing)')!r}, but the spec's {rec.tier} tier "
                                                f"runs arm {rec.arm!r} with {want[key]!r} (a run with overrides does not count)")


# -- 2. provenance --------------------------------------------------------------------------
def _hash_at(module: str, opts: VerifyOptions, rev: str) -> tuple[str | None, list[str]]:
    files = provenance.source_files(module, read=lambda rel: read_at(opts.repo, rev, rel))
    return (provenance.hash_files(files) if files else None), sorted(files)


def check_provenance(rec: Record, path: Path, opts: VerifyOptions, rep: RecordReport) -> None:
    """The revision is a commit in the history of HEAD, and the paper's source files at that
    revision hash to the record's source_hash. A run made from uncommitted code (git_dirty) whose
    code was committed together with the record passes too, with a warning naming that commit:
    either way the code that made the numbers is in the history, for anyone to check out.
    A recertified record's chain is checked link by link: the run's revision hashes to the first
    hash, and each recertifying revision (in the history too) to the hash it wrote."""
    p = rec.provenance
    n = len(p.recertified)
    for i, ((rev, want, want_files), module) in enumerate(zip(p.hash_chain(), rec.module_chain())):
        fields = ("provenance.git_revision" if i == 0 else f"provenance.recertified[{i - 1}].revision",
                  "provenance.source_hash" if i == n else f"provenance.recertified[{i}].previous_source_hash")
        if not _check_link(rec, module, path, opts, rep, rev, want, want_files, fields, first=i == 0):
            break
    missing = [name for name in REQUIRED_PACKAGES if not p.packages.get(name)]
    if missing:
        rep.fail("provenance", "provenance.packages", f"no version recorded for {', '.join(missing)}")
    if rec.status == "ok" and not HEX64.match(p.checkpoint_sha256 or ""):
        rep.fail("provenance", "provenance.checkpoint_sha256", f"{p.checkpoint_sha256!r} is not a sha256: "
                                                               "a finished run names its checkpoint")


def _check_link(rec: Record, module: str, path: Path, opts: VerifyOptions, rep: RecordReport, rev: str | None,
                want: str, want_files: list[str], fields: tuple[str, str], first: bool) -> bool:
    """One link of the hash chain (`fields`: where its revision and its hash lie; `module`: the
    module that link hashed, `rec.module` unless a later recertification moved it); False when it failed."""
    dirty = rec.provenance.git_dirty and first
    field_, hash_field = fields
    if not rev:
        rep.fail("provenance", field_, "missing: a run must be made in a git checkout of the project")
    elif not has_commit(opts.repo, rev):
        rep.fail("provenance", field_, f"{rev} is not a commit of this repository (push the commit the run was made from)")
    elif not is_ancestor(opts.repo, rev):
        rep.fail("provenance", field_, f"{rev} is not in the history of HEAD")
    else:
        at_rev, files = _hash_at(module, opts, rev)
        added = added_in(opts.repo, path) if dirty and at_rev != want else None
        if added and _hash_at(module, opts, added)[0] == want:
            rep.warn("provenance", field_, f"made from uncommitted code on top of {rev[:12]}; "
                                           f"that code was committed with the record in {added[:12]}")
            return True
        if at_rev is None:
            rep.fail("provenance", "module", f"{module!r} does not exist at revision {rev[:12]}.{_dirty(dirty)}")
        elif at_rev != want:
            rep.fail("provenance", hash_field, f"{want[:12]}… is not the hash of {module}'s source files at "
                                               f"{rev[:12]} ({at_rev[:12]}…).{_dirty(dirty)}")
        elif files != sorted(want_files):
            rep.fail("provenance", hash_field.replace("_hash", "_files"),
                     f"{want_files}, but the module's files at {rev[:12]} are {files}")
        else:
            return True
    return False


def _dirty(dirty: bool) -> str:
    return (" The run was made from uncommitted code (provenance.git_dirty): commit the code, then run; or "
            "commit the record in the same commit as the code that made it." if dirty else "")


# -- 3. consistency -------------------------------------------------------------------------
def _finite(values, where: str, rep: RecordReport) -> bool:
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        rep.fail("consistency", where, f"holds {bad[0]} (values must be finite)")
    return not bad


def check_metrics(rec: Record, rep: RecordReport) -> None:
    """Each summary metric that has per-episode / per-sample values of its own name is their mean;
    one derived otherwise (an accuracy, BLEU from n-gram counts, a fitted slope) equals what its
    evaluator's `derive` recomputes from the samples; record.metrics is the union of the
    evaluations' metrics. A metric that neither covers (FID needs the images) is named in a
    warning."""
    merged: dict[str, float] = {}
    for i, ev in enumerate(rec.evaluations):
        where = f"evaluations[{i}]"
        for name, xs in ev.samples.items():
            if not xs:
                rep.fail("consistency", f"{where}.samples.{name}", "empty")
            _finite(xs, f"{where}.samples.{name}", rep)
        try:
            recomputed = derived_metrics(ev)
        except (KeyError, ValueError, TypeError, ZeroDivisionError) as e:
            rep.fail("consistency", f"{where}.samples", f"the {ev.evaluator} evaluator cannot recompute its "
                                                         f"metrics from them: {type(e).__name__}: {e}")
            recomputed = {}
        unchecked = []
        for name, value in ev.metrics.items():
            if not _finite([value], f"{where}.metrics.{name}", rep):
                continue
            xs = ev.samples.get(name)
            if xs:
                how, expected = f"the mean of its {len(xs)} logged values", statistics.fmean(xs)
            elif name in recomputed:
                how, expected = f"recomputed from the samples by the {ev.evaluator} evaluator", recomputed[name]
            else:
                unchecked.append(name)
                continue
            if not math.isclose(value, expected, **EXACT):
                rep.fail("consistency", f"{where}.metrics.{name}", f"{value!r}, but {how} is {expected!r}")
        if unchecked and rec.tier == "full":
            rep.fail("consistency", f"{where}.metrics", f"{', '.join(unchecked)}: no per-sample values they recompute "
                                                        "from; a full-tier claim is re-evaluated metric by metric, "
                                                        "so each needs them")
        elif unchecked:
            rep.warn("consistency", f"{where}.metrics", f"{', '.join(unchecked)}: the {ev.evaluator} evaluator "
                                                        "keeps no values they recompute from, not recomputed")
        merged.update(ev.metrics)
    for name in sorted(set(merged) | set(rec.metrics)):
        if name not in merged:
            rep.fail("consistency", f"metrics.{name}", "reported by no evaluation")
        elif name not in rec.metrics:
            rep.fail("consistency", f"metrics.{name}", f"missing (the evaluation reports {merged[name]!r})")
        elif not math.isclose(rec.metrics[name], merged[name], **EXACT):
            rep.fail("consistency", f"metrics.{name}", f"{rec.metrics[name]!r}, but the evaluation reports {merged[name]!r}")


def check_evaluations(rec: Record, spec: Spec, tier: Tier, rep: RecordReport) -> None:
    """An ok run was scored by each of the tier's evaluators, on as many episodes as the spec says
    (so no bad episode can be left out)."""
    if rec.status != "ok":
        return
    wanted = {}
    for i, e in enumerate(tier.evaluators):
        ev, options = resolve_evaluator(e, f"{spec.id}.tiers.{rec.tier}.evaluators[{i}]")
        wanted[ev.name] = options
    got = [ev.evaluator for ev in rec.evaluations]
    for name in sorted(set(wanted) - set(got)):
        rep.fail("consistency", "evaluations", f"no result of the tier's evaluator {name!r}")
    for i, ev in enumerate(rec.evaluations):
        if ev.evaluator not in wanted:
            rep.fail("consistency", f"evaluations[{i}].evaluator", f"{ev.evaluator!r} is not an evaluator of the tier "
                                                                   f"({', '.join(wanted) or 'none'})")
            continue
        episodes = getattr(wanted[ev.evaluator], "episodes", None)
        for name, xs in ev.samples.items():
            if episodes is not None and len(xs) != episodes:
                rep.fail("consistency", f"evaluations[{i}].samples.{name}",
                         f"{len(xs)} values, but the spec's evaluator runs {episodes} episodes")


def check_targets(rec: Record, rep: RecordReport) -> None:
    """The per-seed target checks, recomputed from the spec and the metrics as the runner does."""
    want = _own_target_checks(rec.paper, rec.tier, rec.arm, rec.metrics)
    if len(want) != len(rec.targets):
        rep.fail("consistency", "targets", f"{len(rec.targets)} recorded, but the spec gives this arm "
                                           f"{len(want)}: {[t.expr for t in want]}")
        return
    for i, (have, t) in enumerate(zip(rec.targets, want)):
        if have.expr != t.expr:
            rep.fail("consistency", f"targets[{i}].expr", f"{have.expr!r}, the spec's is {t.expr!r}")
        elif not math.isclose(have.value, t.value, **EXACT):
            rep.fail("consistency", f"targets[{i}].value", f"{have.value!r}, recomputed {t.value!r} from the metrics")
        elif have.met != t.met:
            rep.fail("consistency", f"targets[{i}].met", f"recorded {have.met}, but {t.expr} gives {t.met} "
                                                         f"at value {t.value:.6g}")


def check_curves(rec: Record, rep: RecordReport) -> None:
    """Curves are ordered by step and by wall time, finite, thinned, and end within the run."""
    for name, points in rec.curves.items():
        where = f"curves.{name}"
        if len(points) > MAX_CURVE_POINTS:
            rep.fail("consistency", where, f"{len(points)} points; the harness keeps at most {MAX_CURVE_POINTS}")
        if not _finite([v for _, _, v in points], where, rep):
            continue
        for i in range(1, len(points)):
            if points[i][0] < points[i - 1][0]:
                rep.fail("consistency", where, f"not ordered by step: step {points[i][0]} after {points[i - 1][0]} (point {i})")
                break
            if points[i][1] < points[i - 1][1]:
                rep.fail("consistency", where, f"wall time goes back at step {points[i][0]} (point {i})")
                break
        if points and points[0][0] < 0:
            rep.fail("consistency", where, f"negative step {points[0][0]}")
        if points and points[-1][1] > rec.provenance.wall_time_s + TIME_SLACK_S:
            rep.fail("consistency", where, f"logged at {points[-1][1]}s, after the run's wall time "
                                           f"({rec.provenance.wall_time_s}s)")


def check_comparable(rec: Record, rep: RecordReport) -> None:
    """A record holds something a re-execution or a re-evaluation can compare: a logged value or a
    per-sample value."""
    if not any(rec.curves.values()) and not any(xs for ev in rec.evaluations for xs in ev.samples.values()):
        rep.fail("consistency", "curves", "no logged value and no per-sample value: nothing a re-execution "
                                          "or a re-evaluation could compare")


def _time(value: str, field_: str, rep: RecordReport) -> datetime | None:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        rep.fail("consistency", field_, f"{value!r} is not an ISO 8601 time")
        return None
    if t.tzinfo is None:
        rep.fail("consistency", field_, f"{value!r} has no time zone")
        return None
    return t


def check_times(rec: Record, rep: RecordReport) -> None:
    """started <= finished, neither in the future, durations that fit between them, and the run
    id's time stamp at the start."""
    p = rec.provenance
    started = _time(p.started_at, "provenance.started_at", rep)
    finished = _time(p.finished_at, "provenance.finished_at", rep)
    now = datetime.now(timezone.utc)
    for name in ("wall_time_s", "train_time_s", "eval_time_s", "harness_overhead_s"):
        if not math.isfinite(getattr(p, name)) or getattr(p, name) < 0:
            rep.fail("consistency", f"provenance.{name}", f"{getattr(p, name)} is not a duration")
            return
    if p.train_time_s + p.eval_time_s > p.wall_time_s + TIME_SLACK_S:
        rep.fail("consistency", "provenance.wall_time_s", f"{p.wall_time_s}s is less than training "
                                                          f"({p.train_time_s}s) and evaluation ({p.eval_time_s}s) together")
    if p.harness_overhead_s > p.wall_time_s + TIME_SLACK_S:
        rep.fail("consistency", "provenance.harness_overhead_s", f"{p.harness_overhead_s}s exceeds the wall time")
    if started is None or finished is None:
        return
    if finished > now + CLOCK_SKEW:
        rep.fail("consistency", "provenance.finished_at", f"{p.finished_at} lies in the future")
    if started > finished:
        rep.fail("consistency", "provenance.started_at", f"{p.started_at} is after finished_at {p.finished_at}")
    elif p.wall_time_s > (finished - started).total_seconds() + TIME_SLACK_S:
        rep.fail("consistency", "provenance.wall_time_s", f"{p.wall_time_s}s, but the run started {p.started_at} "
                                                          f"and finished {p.finished_at}")
    m = STAMP.search(rec.run_id)
    if m:
        stamp = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
        if abs(stamp - started) > CLOCK_SKEW:
            rep.fail("consistency", "provenance.started_at", f"{p.started_at}, but the run id was made at {stamp.isoformat()}")
