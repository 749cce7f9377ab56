"""Every paper's smoke tier runs end to end through the harness: every arm, every seed."""

import pytest

from evals.record import load_record
from evals.tier_runner import job_list, run_one
from evals.spec import all_specs

SMOKE = [s.id for s in all_specs() if "smoke" in s.tiers]


@pytest.mark.parametrize("paper", SMOKE)
def test_smoke_tier(paper, run_opts):
    records = [load_record(run_one(job, run_opts)) for job in job_list(paper, "smoke", None, None, {})]
    assert records
    for rec in records:
        assert rec.status == "ok", f"{paper} {rec.arm} seed {rec.seed}: {rec.error}"
        assert rec.metrics and rec.evaluations
        assert rec.provenance.checkpoint_sha256
