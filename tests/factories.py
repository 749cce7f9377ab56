"""Records built by hand, for tests of what reads records (status, site, verify)."""

from evals.record import EvalResult, Provenance, Record


def make_record(run_id="demo-mini-ours-s1-x", seed=1, arm="ours", value=-150.0, **kw) -> Record:
    return Record(
        run_id=run_id, paper="sac", tier="mini", arm=arm, seed=seed, module="reproductions.sac", status="ok",
        config={"env_id": "Pendulum-v1"}, metrics={"return": value},
        evaluations=[EvalResult(evaluator="rl_return", version=1, metrics={"return": value}, samples={"return": [value]})],
        curves={"train_return": [(200, 1.0, -1200.0), (400, 2.0, -900.0)]},
        provenance=Provenance(
            git_revision="abc", git_dirty=False, source_hash="0" * 64, source_files=["reproductions/sac/sac.py"],
            spec_version=1, packages={"torch": "2"}, hardware={"cpu": "x"}, started_at="2026-01-01T00:00:00+00:00",
            finished_at=kw.pop("finished_at", "2026-01-01T00:05:00+00:00"), wall_time_s=300, train_time_s=290,
            eval_time_s=5, harness_overhead_s=0.1, deterministic=False),
        **kw)
