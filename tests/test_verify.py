"""`repro verify`: a genuine record is accepted; each kind of tampering is rejected with its own
reason. The genuine records are made here: SAC's smoke tier (arm ours, seed 1) through the
runner, and a full-tier record of an untrained policy evaluated by the spec's evaluator, both at a
commit of a temporary git repository that holds the paper's current source files."""

import dataclasses
import json
import math
import pickle
import re
import shutil
import subprocess
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from evals import cli, provenance
from evals.checkpoint import sha256_file
from evals.config import paper_module, resolve
from evals.record import EvalResult, Provenance, Record, load_record, new_run_id, write_record
from evals.tier_runner import RunOptions, _own_target_checks, evaluate_agent, evaluators_for, run_one
from evals.paths import ROOT
from evals.spec import Target, load_spec
from evals.status import current_source_hash, tier_status
from evals.verify import VerifyOptions, verify
from evals.verify.checks import MAX_RECORD_BYTES
from evals.verify.repo import changed_records, rotating_sample
from evals.verify.report import RecordReport, shown
from evals.checkpoint import safetensors_problem
from evals.verify.rerun import compare_curves, mean_difference_ci
from tests.factories import make_record, sac_floor_spec


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def commit_all(repo, message="c"):
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def source_repo(path: Path, modules: list[str]) -> str:
    """A git repository holding the papers' source files as they are now; returns its HEAD."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    for module in modules:
        for rel, data in provenance.source_files(module).items():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_bytes(data)
    return commit_all(path, "sources")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A genuine smoke record (SAC, ours, seed 1) and the repository it names."""
    root = tmp_path_factory.mktemp("verify")
    rev = source_repo(root / "repo", ["reproductions.sac"])
    opts = RunOptions(device="cpu", progress=False, tensorboard=False, results=root / "made", runs=root / "runs")
    rec = load_record(run_one(resolve(load_spec("sac"), "smoke", "ours", 1), opts))
    rec.provenance.git_revision, rec.provenance.git_dirty = rev, False  # made from that commit's files
    return root / "repo", rec


@pytest.fixture
def work(made, tmp_path):
    """A fresh results/ holding the genuine record, and options that skip re-running."""
    repo, rec = made
    path = write_record(rec, tmp_path / "results")
    return VerifyOptions(repo=repo, results=tmp_path / "results", rerun=False), path, rec.model_copy(deep=True)


def findings(report, path=None):
    recs = [r for r in report.records if path is None or r.path == path]
    return [(f.check, f.field, f.reason) for r in recs for f in r.failures]


def rejected_for(report, path, check, field, says):
    found = findings(report, path)
    assert any(c == check and f == field and says in r for c, f, r in found), found
    return found


def rewrite(path, rec: Record):
    path.write_text(rec.model_dump_json(indent=1))


# -- a genuine record -----------------------------------------------------------------------
def test_genuine_record_is_accepted_after_re_execution(work):
    opts, path, _ = work
    report = verify([path], dataclasses.replace(opts, rerun=True))
    assert report.ok, report.text()
    assert any(p.startswith("re-execution (whole run") for p in report.records[0].passed)
    assert report.status == ["status sac/smoke: implemented (seeds per arm: ours 1/1, sb3 0/1; 0 stale record(s))"]
    assert not torch.are_deterministic_algorithms_enabled()  # the re-execution put torch back as it was


def test_prefix_re_execution_accepts_and_catches_an_edited_curve(work, monkeypatch):
    opts, path, rec = work
    monkeypatch.setattr(load_spec("sac").tiers["smoke"], "verify_steps", 200)
    opts = dataclasses.replace(opts, budget_s=0)  # no budget for a whole run: the prefix only
    report = verify([path], dataclasses.replace(opts, rerun=True))
    assert report.ok and "prefix: steps up to 200" in report.records[0].passed[-1], report.text()
    step, wall, value = rec.curves["critic_loss"][1]
    rec.curves["critic_loss"][1] = (step, wall, value * 1.01)  # invisible to the static checks
    rewrite(path, rec)
    report = verify([path], dataclasses.replace(opts, rerun=True))
    rejected_for(report, path, "re-execution", "curves.critic_loss", f"step {step}: recorded")


def test_timings_named_by_the_tier_are_not_compared(work, monkeypatch):
    opts, path, rec = work
    step, wall, value = rec.curves["critic_loss"][1]
    rec.curves["critic_loss"][1] = (step, wall, value * 1.5)  # as if it were a measured speed
    rewrite(path, rec)
    monkeypatch.setattr(load_spec("sac").tiers["smoke"], "verify_timings", ["critic_*"])
    report = verify([path], dataclasses.replace(opts, rerun=True))
    assert report.ok and "timings not compared: critic_loss" in report.records[0].passed[-1], report.text()


def test_only_the_runs_images_may_lie_beside_a_record(work):
    opts, path, _ = work
    folder = path.with_suffix("")
    folder.mkdir()
    (folder / "samples.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    assert verify([path], opts).ok
    (folder / "page.svg").write_text("<svg onload='alert(1)'/>")
    rejected_for(verify([path], opts), path, "schema", f"(images) {folder.name}/", "only PNG and JPEG")


def test_a_verification_prefix_is_not_a_result(work):
    opts, path, rec = work
    rec.status, rec.error = "prefix", "stopped before logging step 250: the prefix ends at step 200"
    rewrite(path, rec)
    rejected_for(verify([path], opts), path, "schema", "status", "not a result")


# -- tampering, each rejected with its own reason -------------------------------------------
def test_edited_metric(work):
    opts, path, rec = work
    rec.metrics["return"] += 50
    rec.evaluations[0].metrics["return"] += 50
    rewrite(path, rec)
    found = rejected_for(verify([path], opts), path, "consistency", "evaluations[0].metrics.return",
                         "but the mean of its 2 logged values")
    assert len(found) == 1, found
    rec.evaluations[0].metrics["return"] -= 50  # only the summary edited
    rewrite(path, rec)
    rejected_for(verify([path], opts), path, "consistency", "metrics.return", "but the evaluation reports")


def test_edited_target_result(work, monkeypatch):
    opts, path, rec = work
    monkeypatch.setattr(load_spec("sac").tiers["smoke"], "targets", [Target(expr="return[ours] >= 0")])
    rec.targets = _own_target_checks("sac", "smoke", "ours", rec.metrics)
    rewrite(path, rec)
    assert verify([path], opts).ok  # the honest check: not met
    assert rec.targets[0].met is False
    rec.targets[0].met = True
    rewrite(path, rec)
    found = rejected_for(verify([path], opts), path, "consistency", "targets[0].met", "recorded True, but")
    assert len(found) == 1, found


def test_wrong_source_hash(work):
    opts, path, rec = work
    rec.provenance.source_hash = "f" * 64
    rewrite(path, rec)
    report = verify([path], opts)
    rejected_for(report, path, "provenance", "provenance.source_hash", "is not the hash of reproductions.sac's source files")
    assert report.records[0].stale  # and today's code is not its code either


def test_unknown_revision(work):
    opts, path, rec = work
    rec.provenance.git_revision = "0123456789abcdef" * 2 + "01234567"
    rewrite(path, rec)
    found = rejected_for(verify([path], opts), path, "provenance", "provenance.git_revision", "is not a commit")
    assert len(found) == 1, found


def test_path_escaping_results(work, tmp_path):
    opts, path, rec = work
    outside = tmp_path / "elsewhere" / "sac" / "smoke" / path.name
    outside.parent.mkdir(parents=True)
    shutil.move(path, outside)
    rejected_for(verify([outside], opts), outside, "schema", "(path)", "lies outside")
    sneaky = opts.results / ".." / "elsewhere" / "sac" / "smoke" / path.name
    rejected_for(verify([sneaky], opts), sneaky, "schema", "(path)", "lies outside")


def test_misplaced_record(work):
    opts, path, rec = work
    moved = opts.results / "sac" / "mini" / path.name
    moved.parent.mkdir(parents=True)
    shutil.move(path, moved)
    rejected_for(verify([moved], opts), moved, "schema", "tier", "the record says 'smoke' but lies under 'mini'")


def test_truncated_json_and_oversized_file(work):
    opts, path, _ = work
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    rejected_for(verify([path], opts), path, "schema", "(file)", "not valid JSON")
    path.write_text(text + " " * MAX_RECORD_BYTES)
    rejected_for(verify([path], opts), path, "schema", "(file)", "over the 2,097,152-byte limit")


def test_duplicated_run_id(work):
    opts, path, _ = work
    twin = path.with_name("sac-smoke-ours-s1-20200101T000000-abcdef.json")
    shutil.copy(path, twin)
    report = verify([path, twin], opts)
    rejected_for(report, path, "consistency", "run_id", f"is also the run id of {twin}")
    rejected_for(report, twin, "schema", "run_id", "lies under")


def test_re_used_seed(work):
    opts, path, rec = work
    again = rec.model_copy(deep=True)
    again.run_id = rec.run_id[:-6] + "fedcba"
    for field in ("started_at", "finished_at"):  # run a little later
        t = datetime.fromisoformat(getattr(rec.provenance, field)) + timedelta(seconds=1)
        setattr(again.provenance, field, t.isoformat())
    later = write_record(again, opts.results)
    report = verify([path, later], opts)
    for p in (path, later):  # neither is in the history: times written in a record prove no order
        rejected_for(report, p, "consistency", "seed", "seed 1 of arm 'ours' has another result under the same code")
        rejected_for(report, p, "consistency", "provenance.checkpoint_sha256", "one run recorded twice")


def test_the_record_in_the_history_stands_whatever_the_times_say(work):
    opts, _, rec = work
    opts = dataclasses.replace(opts, results=opts.repo / f"results-{rec.run_id}")
    genuine = write_record(rec, opts.results)
    commit_all(opts.repo, "the genuine record")
    forged = rec.model_copy(deep=True)
    forged.run_id = rec.run_id[:-6] + "000000"
    forged.provenance.finished_at = "2000-01-01T00:00:00+00:00"  # claims to be the first run of the seed
    forged.provenance.checkpoint_sha256 = "e" * 64
    forged_path = write_record(forged, opts.results)
    report = verify([genuine, forged_path], opts)
    assert not [f for f in findings(report, genuine) if f[0] == "consistency"], report.text()
    rejected_for(report, forged_path, "consistency", "seed", "has another result under the same code")


def test_unknown_arm_and_seed_and_overridden_config(work):
    opts, path, rec = work
    rec.config["total_steps"] = 3000
    rewrite(path, rec)
    rejected_for(verify([path], opts), path, "schema", "config.total_steps", "runs arm 'ours' with 300")
    data = json.loads(path.read_text())
    data["seed"] = 7
    path.write_text(json.dumps(data))
    rejected_for(verify([path], opts), path, "schema", "seed", "not among the spec's seeds [1]")


def test_timestamps_and_curve_order(work):
    opts, path, rec = work
    future = datetime.now(timezone.utc) + timedelta(days=2)
    rec.provenance.finished_at = future.isoformat(timespec="seconds")
    rec.curves["train_return"] = rec.curves["train_return"] + [(10, 0.1, -1000.0)]
    rewrite(path, rec)
    report = verify([path], opts)
    rejected_for(report, path, "consistency", "provenance.finished_at", "lies in the future")
    rejected_for(report, path, "consistency", "curves.train_return", "not ordered by step")


def test_stale_record_is_a_warning_not_a_failure(work, monkeypatch):
    opts, path, _ = work
    monkeypatch.setattr(load_spec("sac"), "version", load_spec("sac").version + 1)
    report = verify([path], opts)
    assert report.ok and report.records[0].stale
    assert [(w.check, w.field) for w in report.records[0].warnings] == [("stale", "provenance.spec_version")]
    assert "1 stale" in report.summary()


def test_a_record_staled_by_code_alone_is_pointed_to_recertify(work, monkeypatch):
    """Stale by its source files: recertify may keep it; stale by a new spec version: only a re-run."""
    opts, path, _ = work
    monkeypatch.setattr("evals.status.current_source_hash", lambda module: "0" * 64)
    (warning,) = verify([path], opts).records[0].warnings
    assert "`repro recertify sac --tier smoke`" in warning.reason
    monkeypatch.setattr(load_spec("sac"), "version", load_spec("sac").version + 1)
    (warning,) = verify([path], opts).records[0].warnings
    assert "recertify" not in warning.reason and warning.reason.endswith("re-run it to count")


def test_cli_reports_one_line_per_failure_and_exits_non_zero(work, capsys):
    opts, path, _ = work
    path.write_text(path.read_text()[:100])
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", str(path), "--results", str(opts.results), "--no-rerun"])
    assert exit_.value.code == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"FAIL {path}: schema: (file): not valid JSON")
    assert lines[-1].startswith("verify: 1 record(s), 0 accepted, 1 rejected, 0 stale")
    with pytest.raises(SystemExit):
        cli.main(["verify", str(path), "--results", str(opts.results), "--no-rerun", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["rejected"] == 1 and out["records"][0]["failures"][0]["check"] == "schema"


# -- full tier: re-evaluation from a checkpoint ----------------------------------------------
@pytest.fixture(scope="module")
def full(made, tmp_path_factory):
    """A full-tier record (SAC, ours_hopper, seed 1) of an untrained policy: its checkpoint in a
    cache under its sha256, its evaluation by the spec's evaluator, everything else as the runner
    writes it. Re-evaluation cannot tell an untrained policy from a trained one; it checks that
    the claimed numbers are what this checkpoint scores."""
    repo, _ = made
    root = tmp_path_factory.mktemp("full")
    resolved = resolve(load_spec("sac"), "full", "ours_hopper", 1)
    torch.manual_seed(1)
    agent = paper_module(resolved.module).build(resolved.config)
    (root / "cache").mkdir()
    tmp = root / "final.safetensors"
    agent.save(tmp)
    sha = sha256_file(tmp)
    shutil.move(tmp, root / "cache" / f"{sha}.safetensors")
    evaluations = evaluate_agent(agent, resolved.config, evaluators_for("sac", "full"))
    metrics = {k: v for ev in evaluations for k, v in ev.metrics.items()}
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rec = Record(
        run_id=new_run_id("sac", "full", "ours_hopper", 1), paper="sac", tier="full", arm="ours_hopper", seed=1,
        module=resolved.module, status="ok", config=resolved.config_dict, metrics=metrics, evaluations=evaluations,
        curves={"train_return": [(1000, 1.0, -5.0)]},
        targets=_own_target_checks("sac", "full", "ours_hopper", metrics),
        provenance=Provenance(
            git_revision=git(repo, "rev-parse", "HEAD"), git_dirty=False, source_hash=current_source_hash(resolved.module),
            source_files=sorted(provenance.source_files(resolved.module)), spec_version=load_spec("sac").version, packages=provenance.packages(),
            hardware=provenance.hardware("cpu"), started_at=(now - timedelta(seconds=10)).isoformat(),
            finished_at=now.isoformat(), wall_time_s=5.0, train_time_s=4.0, eval_time_s=0.5, harness_overhead_s=0.01,
            deterministic=False, checkpoint_sha256=sha),
    )
    return repo, root / "cache", rec


@pytest.fixture
def full_work(full, tmp_path):
    repo, cache, rec = full
    shutil.copytree(cache, tmp_path / "cache")
    opts = VerifyOptions(repo=repo, results=tmp_path / "results", checkpoints=tmp_path / "cache", eval_episodes=5)
    return opts, rec.model_copy(deep=True)


def test_full_record_is_re_evaluated_and_accepted(full_work):
    opts, rec = full_work
    path = write_record(rec, opts.results)
    report = verify([path], opts)
    assert report.ok, report.text()
    assert report.records[0].passed[-1].startswith("re-evaluation (2 claimed metric(s) within the 99% bootstrap")


def test_inflated_full_claim_is_rejected(full_work):
    opts, rec = full_work
    ev = rec.evaluations[0]
    ev.samples["return"] = [x + 100 for x in ev.samples["return"]]  # consistent, but not what the checkpoint does
    ev.metrics["return"] = rec.metrics["return"] = float(np.mean(ev.samples["return"]))
    rec.targets = _own_target_checks("sac", "full", "ours_hopper", rec.metrics)
    path = write_record(rec, opts.results)
    found = rejected_for(verify([path], opts), path, "re-evaluation", "evaluations[0].metrics.return", "excludes 0")
    assert len(found) == 1, found


def test_pickled_checkpoint_is_refused(full_work):
    opts, rec = full_work
    path = write_record(rec, opts.results)
    cached = opts.checkpoints / f"{rec.provenance.checkpoint_sha256}.safetensors"
    state = {k: v.tolist() for k, v in torch.nn.Linear(2, 2).state_dict().items()}
    cached.write_bytes(pickle.dumps(state, protocol=4))
    rejected_for(verify([path], opts), path, "re-evaluation", "provenance.checkpoint_path", "is a Python pickle (protocol 4)")
    pt = opts.repo / "runs" / "final.pt"  # a record that names a torch.save file
    pt.parent.mkdir(exist_ok=True)
    torch.save(state, pt)
    rec.provenance.checkpoint_path = "runs/final.pt"
    rewrite(path, rec)
    rejected_for(verify([path], opts), path, "re-evaluation", "provenance.checkpoint_path", "only .safetensors")
    pt.unlink()


def test_missing_checkpoint_fails_the_full_record(full_work):
    opts, rec = full_work
    path = write_record(rec, opts.results)
    report = verify([path], dataclasses.replace(opts, checkpoints=None))
    rejected_for(report, path, "re-evaluation", "provenance.checkpoint_sha256", "checkpoint not found")


def test_curve_comparison_allows_thinning_but_no_change():
    def make(curves):
        return make_record().model_copy(update={"curves": curves})

    opts = VerifyOptions()
    fresh = make({"r": [(100, 1.0, 12.0), (100, 1.1, 31.0), (200, 2.0, 5.0), (300, 3.0, 7.0)]})
    thinned = make({"r": [(100, 9.0, 31.0), (300, 9.0, 7.0 * (1 + 1e-4))]})  # walls never compared
    rep = RecordReport(Path("x.json"))
    assert compare_curves(thinned, fresh, opts, rep, "") == 2 and not rep.failures
    changed = make({"r": [(100, 1.0, 12.0), (100, 1.1, 31.0), (200, 2.0, 5.01)]})
    assert compare_curves(changed, fresh, opts, rep, "") == 2
    assert [(f.check, f.field) for f in rep.failures] == [("re-execution", "curves.r")]
    assert "step 200: recorded [5.01], re-executed [5.0]" in rep.failures[0].reason


def test_safetensors_sniffing(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.ones(3)}, str(good))
    assert safetensors_problem(good) is None
    zipped = tmp_path / "zipped.safetensors"
    torch.save({"w": torch.ones(3)}, zipped)
    assert "zip archive" in safetensors_problem(zipped)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-4])
    assert "lies outside the file" in safetensors_problem(cut)
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    assert "header is not JSON" in safetensors_problem(noise)


def test_mean_difference_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(3)
    a, b = rng.normal(10, 2, 400), rng.normal(10.5, 3, 400)
    lo, hi = mean_difference_ci(a, b, 0.99)
    half = 2.5758 * math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)  # Welch's standard error
    centre = b.mean() - a.mean()
    assert lo == pytest.approx(centre - half, abs=0.1 * half) and hi == pytest.approx(centre + half, abs=0.1 * half)
    assert mean_difference_ci([5.0] * 4, [5.0] * 7, 0.99) == (0.0, 0.0)


# -- selection, rotation, status -------------------------------------------------------------
def test_changed_records_against_the_base(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    results = repo / "results" / "sac" / "mini"
    results.mkdir(parents=True)
    for name in ("old.json", "kept.json", "gone.json"):
        (results / name).write_text("{}")
    commit_all(repo)
    git(repo, "checkout", "-q", "-b", "contrib")
    (results / "new.json").write_text("{}")
    commit_all(repo)
    (results / "untracked.json").write_text("{}")
    (results / "old.json").write_text('{"edited": 1}')
    (results / "gone.json").unlink()
    opts = VerifyOptions(repo=repo, results=repo / "results")
    changes = changed_records(opts, "main")
    assert sorted(p.name for p in changes.records) == ["new.json", "old.json", "untracked.json"]
    assert changes.edited == [("results/sac/mini/gone.json", "D"), ("results/sac/mini/old.json", "M")]


def test_rotating_sample_covers_every_record_in_turn():
    paths = [Path(f"r{i}.json") for i in range(7)]
    monday = date(2026, 1, 5)
    weeks = [rotating_sample(paths, 3, monday + timedelta(weeks=w)) for w in range(3)]
    assert all(len(w) == 3 for w in weeks) and set().union(*weeks) == set(paths)
    assert rotating_sample(paths, 3, monday) == rotating_sample(paths, 3, monday + timedelta(days=6))
    assert rotating_sample(paths, 10, monday) == paths


def test_status_waits_for_the_minimum_number_of_seeds():
    spec = sac_floor_spec()
    current = current_source_hash("reproductions.sac")

    def rec(seed):
        r = make_record(run_id=f"sac-mini-ours-s{seed}-x", seed=seed, value=-150.0 - seed)
        r.provenance.source_hash = current
        return r

    assert spec.tiers["mini"].required_seeds == 3
    assert tier_status(spec, "mini", [rec(1), rec(2)]).status == "implemented"
    assert tier_status(spec, "mini", [rec(1), rec(2), rec(3)]).status == "reproduced"


def test_committed_records_pass_the_static_checks():
    """Every record committed under results/ passes schema, provenance and consistency (stale ones
    warn); re-execution is left to CI's scheduled job (SAC's mini prefix takes ~15 s a record)."""
    listed = git(ROOT, "ls-files", "results/*.json")
    paths = [ROOT / p for p in listed.splitlines()]
    report = verify(paths, VerifyOptions(rerun=False))
    assert len(report.records) == len(paths)
    assert report.ok, report.text()


# -- issue 12: verification that cannot be fooled ---------------------------------------------
def consistent_with(rec: Record, shift: float) -> Record:
    """`rec` with its final evaluation rewritten, every number consistent with the others."""
    ev = rec.evaluations[0]
    ev.samples["return"] = [x + shift for x in ev.samples["return"]]
    ev.metrics["return"] = rec.metrics["return"] = float(np.mean(ev.samples["return"]))
    rec.targets = _own_target_checks(rec.paper, rec.tier, rec.arm, rec.metrics)
    return rec


def test_a_rewritten_final_evaluation_is_caught_by_re_execution_to_the_end(work, monkeypatch):
    opts, path, rec = work
    monkeypatch.setattr(load_spec("sac").tiers["smoke"], "verify_steps", 200)  # a prefix would see no evaluation
    rewrite(path, consistent_with(rec, 25.0))
    report = verify([path], dataclasses.replace(opts, rerun=True))
    rejected_for(report, path, "re-execution", "metrics.return", "recorded")
    rejected_for(report, path, "re-execution", "evaluations[0].samples.return", "recorded")
    assert report.plan[0].endswith("every one to the end"), report.plan


def test_a_failed_record_is_re_executed_like_any_other(work, monkeypatch):
    opts, path, rec = work
    monkeypatch.setattr(load_spec("sac").tiers["smoke"], "verify_steps", 200)
    rec.status, rec.error = "failed", "'critic_loss' became nan at step 290: the run diverged"  # hides a result
    rec.metrics, rec.evaluations, rec.targets = {}, [], []
    rewrite(path, rec)
    assert verify([path], opts).ok  # consistent on its face
    report = verify([path], dataclasses.replace(opts, rerun=True))
    rejected_for(report, path, "re-execution", "status", "recorded 'failed', the re-execution ended 'ok'")


def test_a_record_with_nothing_to_compare_is_rejected(work):
    opts, path, rec = work
    rec.curves = {}
    rec.evaluations[0].samples = {}
    rewrite(path, rec)
    rejected_for(verify([path], opts), path, "consistency", "curves", "nothing a re-execution or a re-evaluation")


def test_over_the_budget_a_draw_the_contributor_cannot_choose_picks_the_whole_runs(made):
    from evals.verify.plan import draw_seed, plan_reexecution

    repo, _ = made
    records = {Path(f"/r/sac-mini-ours-s{i}.json"): make_record(run_id=f"sac-mini-ours-s{i}-x", seed=i) for i in range(1, 7)}
    opts = VerifyOptions(repo=repo, budget_s=3 * 300, draw_seed="merge-commit-1")  # each record states 300 s
    plan = plan_reexecution(records, opts)
    assert len(plan.whole) == 3 and plan == plan_reexecution(records, opts)
    assert "3 drawn with seed merge-commit" in plan.lines[0] and "3 prefix-checked" in plan.lines[0]
    assert all(shown(p) in plan.lines[1 if p in plan.whole else 2] for p in records)
    draws = {plan_reexecution(records, dataclasses.replace(opts, draw_seed=f"merge-commit-{i}")).whole for i in range(8)}
    assert len(draws) > 1  # the seed, not the contributor, decides
    assert plan_reexecution(records, dataclasses.replace(opts, budget_s=6 * 300)).whole == frozenset(records)
    assert draw_seed(dataclasses.replace(opts, draw_seed=None)) == git(repo, "rev-parse", "HEAD")
    assert len(plan_reexecution(records, dataclasses.replace(opts, budget_s=1)).whole) == 1  # never none ...
    assert not plan_reexecution(records, dataclasses.replace(opts, budget_s=0)).whole  # ... unless asked


def test_an_evaluator_version_from_the_future_is_rejected_not_stale(work):
    opts, path, rec = work
    rec.evaluations[0].version = 2
    rewrite(path, rec)
    report = verify([path], opts)
    rejected_for(report, path, "schema", "evaluations[0].version", "rl_return v2, newer than this code's v1")


@pytest.mark.parametrize("damage, says", [
    (lambda text: text.replace('"arm": "ours"', '"arm": ' + "[" * 100_000), "nested too deeply"),
    (lambda text: text.replace('"run_id": "', '"run_id": "\xe9'), "not UTF-8 text (byte 0xe9"),
    (lambda text: text.replace('"seed": 1', '"seed": 1' + "0" * 5000), "Exceeds the limit"),
    (lambda text: re.sub(r'"wall_time_s": [0-9.]+', '"wall_time_s": 1e999', text), "provenance.wall_time_s"),
    (lambda text: text.replace('"curves": {', '"curves": {"nan_curve": [[1, 0.5, NaN]], ', 1), "curves.nan_curve"),
    (lambda text: text.replace('"checkpoint_path": "', '"checkpoint_path": "../../../etc/'), "not a path inside the repository"),
    (lambda text: text.replace('"critic_loss"', '"<img src=x onerror=alert(1)>"', 1), "String should match pattern"),
    (lambda text: text.replace('"critic_loss"', '"$\\\\alpha$"', 1), "String should match pattern"),
])
def test_a_malformed_record_is_one_schema_line(work, damage, says):
    opts, path, _ = work
    path.write_bytes(damage(path.read_text()).encode("latin-1"))
    report = verify([path], opts)
    [(check, field, reason)] = findings(report, path)
    assert check == "schema" and says in f"{field}: {reason}" and "\n" not in reason, (check, field, reason)


def test_a_nested_safetensors_header_is_refused(tmp_path):
    header = b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    nested = tmp_path / "nested.safetensors"
    nested.write_bytes(len(header).to_bytes(8, "little") + header)
    assert "nested too deeply" in safetensors_problem(nested)


def test_a_full_record_carries_the_samples_of_every_metric(full_work):
    opts, rec = full_work
    del rec.evaluations[0].samples["episode_length"]
    path = write_record(rec, opts.results)
    rejected_for(verify([path], dataclasses.replace(opts, rerun=False)), path, "consistency", "evaluations[0].metrics",
                 "episode_length: no per-sample values")


def test_re_evaluation_tests_a_metric_derived_from_the_samples():
    from evals.verify.rerun import check_claims

    def result(correct):
        return EvalResult(evaluator="classification", version=1, metrics={"accuracy": float(np.mean(correct))},
                          samples={"correct": [float(c) for c in correct]})

    rng = np.random.default_rng(0)
    fresh = result(rng.random(400) < 0.6)
    honest, inflated = result(rng.random(400) < 0.6), result(rng.random(400) < 0.9)
    rep = RecordReport(Path("x.json"))
    assert check_claims(honest, 0, fresh, VerifyOptions(), rep) == 1 and not rep.failures
    check_claims(inflated, 0, fresh, VerifyOptions(), rep)
    assert [(f.field, "excludes 0" in f.reason) for f in rep.failures] == [("evaluations[0].metrics.accuracy", True)]


def _tree(tmp_path):
    """A repository whose main branch holds a genuine record's place, and a branch that adds
    things under results/ that may not lie there."""
    repo = tmp_path / "repo"
    tier = repo / "results" / "sac" / "smoke"
    tier.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (tier / "sac-smoke-ours-s1-x.json").write_text("{}")
    commit_all(repo)
    git(repo, "checkout", "-q", "-b", "contrib")
    (tier / "sac-smoke-ours-s1-x").mkdir()
    (tier / "sac-smoke-ours-s1-x" / "r\u00e9sum\u00e9\t\"x\".png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 2_000_001)
    (tier / "notes.txt").write_text("hello")
    (tier / "orphan").mkdir()
    (tier / "orphan" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tier / "folder.json").mkdir()
    (tier / "folder.json" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tier / "linked.json").symlink_to(tier / "sac-smoke-ours-s1-x.json")
    (repo / "outside").mkdir()
    (repo / "results" / "sac" / "mini").symlink_to(repo / "outside", target_is_directory=True)
    commit_all(repo)
    return repo


def test_every_path_a_change_touches_under_results_is_checked(tmp_path):
    from evals.verify.tree import tree_reports

    repo = _tree(tmp_path)
    opts = VerifyOptions(repo=repo, results=repo / "results")
    changes = changed_records(opts, "main")
    rejected = {r.path.relative_to(opts.results).as_posix(): r.failures[0].reason
                for r in tree_reports(opts.results, changes.records + changes.other)}
    assert rejected == {
        "sac/smoke/sac-smoke-ours-s1-x/r\u00e9sum\u00e9\t\"x\".png": "r\u00e9sum\u00e9\t\"x\".png: 2,000,009 bytes, over the 2,000,000 allowed",
        "sac/smoke/notes.txt": "neither a record (results/<paper>/<tier>/<run_id>.json) nor an image in the folder beside one",
        "sac/smoke/orphan/a.png": "neither a record (results/<paper>/<tier>/<run_id>.json) nor an image in the folder beside one",
        "sac/smoke/folder.json/b.png": "neither a record (results/<paper>/<tier>/<run_id>.json) nor an image in the folder beside one",
        "sac/smoke/linked.json": "a symbolic link (or inside a linked folder): never followed, not allowed under results/",
        "sac/mini": "a symbolic link (or inside a linked folder): never followed, not allowed under results/",
    }


def test_verify_all_walks_results_without_following_a_link(tmp_path):
    from evals.record import record_files
    from evals.verify.tree import tree_paths, tree_reports

    repo = _tree(tmp_path)
    (repo / "outside" / "planted.json").write_text("{}")
    results = repo / "results"
    assert [p.name for p in record_files(results=results)] == ["sac-smoke-ours-s1-x.json"]
    rejected = {r.path.relative_to(results).as_posix() for r in tree_reports(results, tree_paths(results))}
    assert rejected == {"sac/smoke/notes.txt", "sac/smoke/orphan", "sac/smoke/orphan/a.png", "sac/smoke/folder.json",
                        "sac/smoke/folder.json/b.png", "sac/smoke/linked.json", "sac/mini"}


def test_an_invalid_full_record_is_re_evaluated_like_any_other(full_work):
    opts, rec = full_work
    rec.status, rec.error = "invalid", "evaluation failed: RuntimeError: the simulator crashed"  # hides a bad seed
    rec.metrics, rec.evaluations, rec.targets = {}, [], []
    path = write_record(rec, opts.results)
    rejected_for(verify([path], opts), path, "re-evaluation", "status", "scored afresh without error")
