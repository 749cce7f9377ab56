"""Records built by hand, for tests of what reads records (status, site, verify); and a run
interrupted part-way, for tests of resuming."""

import dataclasses

import pytest

from evals.record import EvalResult, Provenance, Record
from evals.run_context import Run
from evals.spec import load_spec
from evals.tier_runner import RunOptions, run_one


def make_record(run_id="demo-mini-ours-s1-x", seed=1, arm="ours", value=-150.0, **kw) -> Record:
    """A SAC mini record of arm `arm` under today's spec version (its source hash is a placeholder)."""
    return Record(
        run_id=run_id, paper="sac", tier="mini", arm=arm, seed=seed, module="reproductions.sac", status="ok",
        config={"env_id": "Pendulum-v1"}, metrics={"return": value},
        evaluations=[EvalResult(evaluator="rl_return", version=1, metrics={"return": value}, samples={"return": [value]})],
        curves={"train_return": [(200, 1.0, -1200.0), (400, 2.0, -900.0)]},
        provenance=Provenance(
            git_revision="abc", git_dirty=False, source_hash="0" * 64, source_files=["reproductions/sac/sac.py"],
            spec_version=load_spec("sac").version, packages={"torch": "2"}, hardware={"cpu": "x"}, started_at="2026-01-01T00:00:00+00:00",
            finished_at=kw.pop("finished_at", "2026-01-01T00:05:00+00:00"), wall_time_s=300, train_time_s=290,
            eval_time_s=5, harness_overhead_s=0.1, deterministic=False),
        **kw)


def sac_floor_spec():
    """SAC's spec with its mini tier's targets cut to the Pendulum floors, the ones about `ours` alone
    (the others compare arms), for tests of status over records of one arm."""
    sac = load_spec("sac")
    mini = sac.tiers["mini"]
    floors = [t for t in mini.targets if t.arms() == {"ours"}]
    assert len(floors) == 2, "SAC's mini tier has two Pendulum floors"
    return sac.model_copy(update={"tiers": {**sac.tiers, "mini": mini.model_copy(update={"targets": floors})}})


def interrupt(job, opts: RunOptions, tmp_path, monkeypatch, after: int = 450) -> RunOptions:
    """Run `job` in folders of its own under `tmp_path` and stop it (KeyboardInterrupt) after
    `after` progress steps; returns its options, ready for `resume=True`."""
    interrupted = dataclasses.replace(opts, results=tmp_path / "r2", runs=tmp_path / "runs2")
    calls = {"n": 0}
    real_advance = Run.advance

    def advance_then_crash(self, n=1, **kw):
        calls["n"] += 1
        if calls["n"] == after:
            raise KeyboardInterrupt
        real_advance(self, n, **kw)

    monkeypatch.setattr(Run, "advance", advance_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_one(job, interrupted)
    monkeypatch.setattr(Run, "advance", real_advance)
    return interrupted
