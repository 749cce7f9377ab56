"""The harness end to end on SAC's smoke tier: records, resume, divergence, launchers, evaluate."""

import dataclasses
import json
import os
import platform
import subprocess
import sys

import numpy as np
import torch
import pytest
from safetensors.torch import save_file

from evals import cli
from evals.config import resolve
from evals.record import load_record, load_records
from evals.run_context import DivergenceError, Run
from evals.tier_runner import job_list, launch, run_one
from evals.spec import Target, load_spec
from evals.stats import bootstrap_ci, check_target
from evals.status import current_source_hash, tier_status
from tests.factories import interrupt, make_record, sac_floor_spec


def smoke(arm="ours", seed=1, **overrides):
    return resolve(load_spec("sac"), "smoke", arm, seed, overrides)


def test_smoke_record_is_complete(run_opts):
    rec = load_record(run_one(smoke(), run_opts))
    assert rec.status == "ok" and rec.paper == "sac" and rec.tier == "smoke"
    ev = rec.evaluations[0]
    assert ev.evaluator == "rl_return" and len(ev.samples["return"]) == 2
    assert rec.metrics["return"] == pytest.approx(np.mean(ev.samples["return"]))
    assert ev.protocol["env_id"] == "Pendulum-v1" and "deterministic" in ev.protocol["actions"]
    assert "train_return" in rec.curves and "critic_loss" in rec.curves
    p = rec.provenance
    assert len(p.source_hash) == 64 and "reproductions/sac/sac.py" in p.source_files
    assert p.checkpoint_sha256 and (run_opts.runs.parent / p.checkpoint_path).is_file()
    assert p.wall_time_s >= p.train_time_s > 0 and "torch" in p.packages


def _values(rec):
    return {k: [(s, v) for s, _, v in pts] for k, pts in rec.curves.items()}


def test_resume_finishes_with_the_same_result(run_opts, monkeypatch, tmp_path):
    job = smoke(total_steps=600)
    whole = load_record(run_one(job, dataclasses.replace(run_opts, checkpoint_every=150)))

    interrupted = interrupt(job, dataclasses.replace(run_opts, checkpoint_every=150), tmp_path, monkeypatch)
    assert not list((tmp_path / "r2").rglob("*.json"))
    resumed = load_record(run_one(job, dataclasses.replace(interrupted, resume=True)))
    assert resumed.run_id.startswith("sac-smoke-ours-s1")
    assert resumed.metrics == whole.metrics
    assert _values(resumed) == _values(whole)


def test_divergence_stops_the_run_naming_the_step(run_opts, monkeypatch, tmp_path):
    run = Run(tmp_path / "r", 1, "cpu", progress=False, tensorboard=False)
    with pytest.raises(DivergenceError, match="'loss' became nan at step 42"):
        run.log(42, loss=float("nan"))
    run.close()

    import reproductions.sac as paper

    def diverging_train(cfg, run):
        run.log(7, critic_loss=float("inf"))

    monkeypatch.setattr(paper, "train", diverging_train)
    rec = load_record(run_one(smoke(), run_opts))
    assert rec.status == "failed" and "step 7" in rec.error and rec.metrics == {}


def test_broken_evaluation_is_invalid_not_zero(run_opts, monkeypatch):
    from evals.evaluators import rl_return

    def broken(*a, **k):
        raise RuntimeError("env exploded")

    monkeypatch.setattr(rl_return, "run_episodes", broken)
    rec = load_record(run_one(smoke(), run_opts))
    assert rec.status == "invalid" and "env exploded" in rec.error and rec.metrics == {}


def test_local_pool_and_submitit_launchers(run_opts):
    jobs = job_list("sac", "smoke", [1, 2], ["ours"], {"total_steps": 150})
    pool = launch(jobs, {"total_steps": 150}, run_opts, n_jobs=2, launcher="local")
    sub = launch(jobs[:1], {"total_steps": 150}, run_opts, launcher="submitit-local")
    records = [load_record(p) for p in pool + sub]
    assert sorted(r.seed for r in records) == [1, 1, 2] and all(r.status == "ok" for r in records)
    assert len({r.run_id for r in records}) == 3


def test_evaluate_a_saved_run_reproduces_its_metrics(run_opts, capsys):
    path = run_one(smoke(arm="sb3"), run_opts)
    rec = load_record(path)
    run_dir = run_opts.runs / "sac" / "smoke" / rec.run_id
    assert cli.main(["evaluate", str(run_dir), "--json"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh[0]["metrics"]["return"] == pytest.approx(rec.metrics["return"])


def test_evaluate_names_a_checkpoint_that_does_not_fit_the_run(run_opts, capsys):
    path = run_one(smoke(arm="sb3"), run_opts)
    run_dir = run_opts.runs / "sac" / "smoke" / load_record(path).run_id
    save_file({"not.a.weight": torch.zeros(3)}, str(run_dir / "final.safetensors"))     # another model's tensors
    assert cli.main(["evaluate", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "final.safetensors: does not load into" in err and "seed 1" in err


def test_dry_run_names_missing_requirements(capsys):
    code = cli.main(["reproduce", "sac", "--tier", "full", "--dry-run", "--arms", "ours", "--set", "env_id=NoSuchEnv-v0"])
    err = capsys.readouterr().err
    assert code == 2 and "missing data" in err and "NoSuchEnv-v0" in err


# -- statistics and status ---------------------------------------------------------------------
def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    x = [1.0, 2.0, 3.0, 10.0]
    lo, hi = bootstrap_ci(x)
    assert lo < np.mean(x) < hi and (lo, hi) == bootstrap_ci(x)
    assert bootstrap_ci([5.0]) == (5.0, 5.0)


def test_target_tests():
    vals = {("return", "ours"): {1: -150.0, 2: -160.0, 3: -190.0}, ("return", "sb3"): {1: -170.0, 2: -180.0, 3: -230.0}}
    assert check_target(Target(expr="return[ours] >= -200"), vals, 3).met
    assert not check_target(Target(expr="return[ours] >= -170"), vals, 3).met  # mean -167 but the CI dips below
    assert check_target(Target(expr="return[ours] >= -170", test="mean"), vals, 3).met
    assert not check_target(Target(expr="return[ours] >= -170", test="all_seeds"), vals, 3).met
    assert check_target(Target(expr="return[ours] > return[sb3]"), vals, 3).met  # paired per seed
    short = check_target(Target(expr="return[ours] >= -200"), vals, 4)
    assert not short.met and "needs 4" in short.detail


def test_status_from_records():

    spec = sac_floor_spec()
    good = current_source_hash("reproductions.sac")

    def rec(seed, value, source=good, arm="ours"):
        r = make_record(run_id=f"r{seed}{arm}{value}", seed=seed, arm=arm, value=value)
        r.provenance.source_hash = source
        return r

    assert tier_status(spec, "mini", []).status == "implemented"
    ok = [rec(s, -150.0 - s) for s in (1, 2, 3)]
    assert tier_status(spec, "mini", ok).status == "reproduced"
    assert tier_status(spec, "mini", ok[:2]).status == "implemented"  # a seed short
    one_bad = ok[:2] + [rec(3, -400.0)]
    st = tier_status(spec, "mini", one_bad)
    assert st.status == "not-reproduced" and st.targets_met == 0
    mixed = ok[:2] + [rec(3, -210.0)]  # mean clears -200 but seed 3 does not and the CI is wide
    assert tier_status(spec, "mini", mixed).status in ("partly-reproduced", "not-reproduced")
    stale = [rec(s, -150.0, source="f" * 64) for s in (1, 2, 3)]
    st = tier_status(spec, "mini", stale)
    assert st.status == "implemented" and len(st.stale) == 3
    assert tier_status(spec, "no_such_tier", []).status == "not-implemented"  # a paper without that tier's code


def test_logged_values_reach_the_file_while_the_run_goes_on(tmp_path, monkeypatch):
    import evals.run_context as run_module

    monkeypatch.setattr(run_module, "FLUSH_EVERY_S", 0.0)
    run = run_module.Run(tmp_path, seed=1, device=torch.device("cpu"), progress=False, tensorboard=False)
    run.log(10, loss=0.5)
    run.log(20, loss=0.25)
    assert [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0.5, 0.25]
    run.close()


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")
def test_importing_the_harness_pins_torch_to_avx2_kernels_unless_the_user_chose():
    probe = "import evals, torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "AVX2"
    chosen = subprocess.run([sys.executable, "-c", probe], env={**env, "ATEN_CPU_CAPABILITY": "default"},
                            capture_output=True, text=True, check=True).stdout.strip()
    assert chosen == "DEFAULT"


def test_an_interrupted_run_says_so_in_its_folder(run_opts, monkeypatch, tmp_path):
    interrupted = interrupt(smoke(), run_opts, tmp_path, monkeypatch, after=100)
    [meta] = interrupted.runs.rglob("run.json")
    assert json.loads(meta.read_text())["status"] == "interrupted"


def test_a_second_run_of_the_same_seed_is_refused_while_the_first_runs(run_opts, capsys, monkeypatch):
    from evals.tier_runner import RunInProgress, exclusive

    with exclusive(smoke(), run_opts.runs):  # the first run, in progress
        with pytest.raises(RunInProgress, match=r"sac/smoke arm 'ours' seed 1 is being run already \(process \d+"):
            run_one(smoke(), run_opts)
        monkeypatch.setenv("REPRO_RUNS", str(run_opts.runs))
        monkeypatch.setenv("REPRO_RESULTS", str(run_opts.results))
        code = cli.main(["reproduce", "sac", "--tier", "smoke", "--arms", "ours", "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err[-1].startswith("repro: error: ") and "is being run already" in err[-1]
    assert not list(run_opts.results.rglob("*.json"))
    assert load_record(run_one(smoke(), run_opts)).status == "ok"  # the lock went with the first run
