"""`repro recertify` across a module move: a record whose arm the spec has moved to another module
(a module renamed, or folded into another, as DQN's sb3_mse.py into sb3_baseline.py) is stale, is
re-executed with today's module, and where its numbers repeat takes today's module with a link
naming the one it replaced; verify checks each link of the chain against the module that revision
ran. The record here is SAC's genuine smoke record (arm ours, module reproductions.sac) presented
as if its arm had run `reproductions.sac.old_name` until a commit moved it."""

from __future__ import annotations

import json

from evals import provenance
from evals.record import Recertification, load_record, write_record
from evals.recertify import recertify_record
from evals.spec import load_spec
from evals.status import current_source_hash, staleness
from evals.verify import recertification_problem, verify
from evals.verify.repo import read_at
from tests.test_verify import commit_all, findings, made, work  # noqa: F401  (fixtures)

OLD = "reproductions.sac.old_name"


def _as_old_module(rec, source_hash: str, files: list[str], revision: str | None = None):
    old = rec.model_copy(deep=True)
    old.module = OLD
    old.provenance.source_hash, old.provenance.source_files = source_hash, files
    if revision:
        old.provenance.git_revision = revision
    return old


def test_a_record_whose_arm_moved_is_stale_and_recertified_under_the_new_module(made, tmp_path):
    _, rec = made
    before = _as_old_module(rec, "0" * 64, ["reproductions/sac/old_name.py"])
    why = staleness(before, load_spec("sac"))
    assert why.startswith("the paper's source files changed") and OLD in why and "now runs reproductions.sac" in why
    path = write_record(before, tmp_path / "results")
    out = recertify_record(path, "f" * 40)
    assert out.result == "recertified", out.detail
    assert f"module {OLD} -> reproductions.sac" in out.detail
    after = load_record(path)
    assert after.module == "reproductions.sac" and after.provenance.source_hash == current_source_hash("reproductions.sac")
    [link] = after.provenance.recertified
    assert (link.previous_module, link.previous_source_hash) == (OLD, "0" * 64) and link.checked.endswith("reproductions.sac")
    assert after.module_chain() == [OLD, "reproductions.sac"]
    assert staleness(after, load_spec("sac")) is None
    assert recertification_problem(before, after) is None  # the module is part of what the link may change
    assert recertification_problem(before.model_copy(update={"module": "reproductions.sac"}), after) is not None


def test_a_link_that_moved_no_module_keeps_its_shape():
    link = Recertification(previous_source_hash="0" * 64, previous_source_files=[], revision="f" * 40,
                           at="2026-11-27T00:00:00+00:00", checked="re-execution (whole run)")
    assert "previous_module" not in json.loads(link.model_dump_json())
    moved = link.model_copy(update={"previous_module": OLD})
    assert json.loads(moved.model_dump_json())["previous_module"] == OLD
    assert Recertification.model_validate_json(moved.model_dump_json()) == moved


def _spec_naming(repo, module: str) -> str:
    """Commit a spec whose smoke arm `ours` runs `module` (all verify reads of a past spec)."""
    spec = repo / "reproductions" / "sac" / "spec.yaml"
    spec.write_text(f"id: sac\ntiers:\n  smoke:\n    arms:\n      ours: {{module: {module}}}\n")
    return commit_all(repo, f"the arm runs {module}")


def test_verify_follows_a_moved_module_through_the_chain(work):
    opts, path, rec = work
    repo = opts.repo
    (repo / "reproductions" / "sac" / "old_name.py").write_text("from reproductions.sac.sac import *  # noqa\n")
    rev_old = _spec_naming(repo, OLD)
    old_files = provenance.source_files(OLD, read=lambda rel: read_at(repo, rev_old, rel))
    old_hash = provenance.hash_files(old_files)
    assert old_hash != provenance.hash_files(provenance.source_files(rec.module, read=lambda rel: read_at(repo, rev_old, rel)))
    old = _as_old_module(rec, old_hash, sorted(old_files), rev_old)

    # not yet recertified: stale (a warning naming the move), not rejected, since its revision's spec ran that module
    path.write_text(old.model_dump_json(indent=1))
    report = verify([path], opts)
    assert not findings(report), findings(report)
    [stale] = [w for w in report.records[0].warnings if w.check == "stale"]
    assert "now runs reproductions.sac" in stale.reason

    # a module the arm never ran at any revision of the record's chain is still rejected
    orig_rev = rec.provenance.git_revision  # the sources' first commit: no spec there
    never = _as_old_module(rec, provenance.hash_files(provenance.source_files(
        OLD, read=lambda rel: read_at(repo, rev_old, rel))), sorted(old_files), orig_rev)
    path.write_text(never.model_dump_json(indent=1))
    assert ("schema", "module") in [f[:2] for f in findings(verify([path], opts))]

    # recertified at a commit whose spec moved the arm: each link checked against its own module
    rev_new = _spec_naming(repo, "reproductions.sac")
    new_files = provenance.source_files("reproductions.sac", read=lambda rel: read_at(repo, rev_new, rel))
    moved = old.model_copy(deep=True)
    moved.module = "reproductions.sac"
    moved.provenance.recertified = [Recertification(
        previous_source_hash=old_hash, previous_source_files=sorted(old_files), revision=rev_new,
        at="2026-11-27T00:00:00+00:00", checked="re-execution (whole run)", previous_module=OLD)]
    moved.provenance.source_hash, moved.provenance.source_files = provenance.hash_files(new_files), sorted(new_files)
    path.write_text(moved.model_dump_json(indent=1))
    assert not [f for f in findings(verify([path], opts)) if f[0] in ("provenance", "schema")]

    # the same chain without the link's previous_module hashes the first link with the wrong module
    unnamed = moved.model_copy(deep=True)
    unnamed.provenance.recertified[0].previous_module = None
    path.write_text(unnamed.model_dump_json(indent=1))
    assert ("provenance", "provenance.recertified[0].previous_source_hash") in [f[:2] for f in findings(verify([path], opts))]
