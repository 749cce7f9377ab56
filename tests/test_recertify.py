"""`repro recertify`: a stale record whose numbers today's code repeats bit for bit moves to
today's source hash with a chain that verify checks; a record whose numbers change does not; and
a committed record may change in nothing but its recertifications."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.record import Recertification, load_record, write_record
from evals.recertify import recertify_record
from evals.status import current_source_hash
from evals.verify import recertification_problem, verify
from tests.test_verify import commit_all, findings, made, work  # noqa: F401  (fixtures)

OLD_HASH = "0" * 64


def _stale_copy(rec, results: Path) -> Path:
    stale = rec.model_copy(deep=True)
    stale.provenance.source_hash = OLD_HASH
    return write_record(stale, results)


def test_a_repeated_run_is_recertified_with_its_chain(made, tmp_path):
    _, rec = made
    path = _stale_copy(rec, tmp_path / "results")
    out = recertify_record(path, "f" * 40)
    assert out.result == "recertified", out.detail
    after = load_record(path)
    assert after.provenance.source_hash == current_source_hash(rec.module)
    [link] = after.provenance.recertified
    assert (link.previous_source_hash, link.revision) == (OLD_HASH, "f" * 40)
    assert "whole run" in link.checked
    assert after.metrics == rec.metrics and after.curves == rec.curves


def test_a_run_whose_numbers_change_is_not_recertified(made, tmp_path):
    _, rec = made
    tampered = rec.model_copy(deep=True)
    name = sorted(tampered.curves)[0]
    step, wall, value = tampered.curves[name][-1]
    tampered.curves[name][-1] = (step, wall, value + 1e-9 * max(1.0, abs(value)))  # one value, in its last digits
    path = _stale_copy(tampered, tmp_path / "results")
    out = recertify_record(path, "f" * 40)
    assert out.result == "changed" and f"curves.{name}" in out.detail
    assert load_record(path).provenance.source_hash == OLD_HASH  # untouched


def test_a_current_record_is_left_alone(made, tmp_path):
    _, rec = made
    path = write_record(rec, tmp_path / "results")
    assert recertify_record(path, "f" * 40).result == "current"


def _link(previous: str, revision: str) -> Recertification:
    return Recertification(previous_source_hash=previous, previous_source_files=["x.py"], revision=revision,
                           at="2026-11-26T00:00:00+00:00", checked="re-execution (whole run)")


def test_only_recertifications_may_be_added_to_a_committed_record(made):
    _, before = made
    after = before.model_copy(deep=True)
    after.provenance.recertified = [_link(before.provenance.source_hash, "a" * 40)]
    after.provenance.source_hash, after.provenance.source_files = "1" * 64, ["y.py"]
    after.provenance.recertified[0].previous_source_files = before.provenance.source_files
    assert recertification_problem(before, after) is None
    edited = after.model_copy(deep=True)
    edited.metrics = {k: v + 1 for k, v in edited.metrics.items()}
    assert "metrics changed" in recertification_problem(before, edited)
    assert recertification_problem(before, before) == "no recertification was added"


def test_verify_checks_each_link_of_the_chain(work):
    opts, path, rec = work
    repo = opts.repo
    hashed = Path(repo) / rec.provenance.source_files[0]
    hashed.write_text(hashed.read_text() + "\n# a comment: no number changes\n")
    new_rev = commit_all(repo, "tidy")
    from evals import provenance
    from evals.verify.repo import read_at

    new_files = provenance.source_files(rec.module, read=lambda rel: read_at(repo, new_rev, rel))
    good = rec.model_copy(deep=True)
    good.provenance.recertified = [Recertification(
        previous_source_hash=rec.provenance.source_hash, previous_source_files=rec.provenance.source_files,
        revision=new_rev, at="2026-11-26T00:00:00+00:00", checked="re-execution (whole run)")]
    good.provenance.source_hash, good.provenance.source_files = provenance.hash_files(new_files), sorted(new_files)
    path.write_text(good.model_dump_json(indent=1))
    assert not [f for f in findings(verify([path], opts)) if f[0] == "provenance"]

    wrong = good.model_copy(deep=True)
    wrong.provenance.recertified[0].revision = rec.provenance.git_revision  # that commit's code is the old one
    path.write_text(wrong.model_dump_json(indent=1))
    assert ("provenance", "provenance.source_hash") in [f[:2] for f in findings(verify([path], opts))]


def test_the_site_says_where_a_record_was_recertified(made):
    from leaderboard.tables import _code

    _, rec = made
    p = rec.provenance.model_copy(deep=True)
    assert "recertified" not in _code(p)
    p.recertified = [_link(p.source_hash, "abcdef0123" + "0" * 30)]
    assert _code(p).endswith("recertified at abcdef01")
