"""The papers' published numbers: every spec carries them, each says where it stands in the paper
and in what setting it was measured, and `repro show PAPER` prints them."""
from __future__ import annotations

import contextlib
import io

import pytest

from evals.cli import main
from evals.spec import all_specs

SPECS = all_specs()
IDS = [s.id for s in SPECS]


def test_every_spec_validates():
    assert len(SPECS) == 25
    assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_published_is_not_empty(spec):
    assert spec.published, f"{spec.id}: no published numbers"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_published_entries_are_complete(spec):
    for p in spec.published:
        assert p.metric and p.metric.strip(), f"{spec.id}: entry without a metric"
        assert isinstance(p.value, float), f"{spec.id}/{p.metric}: value {p.value!r} is not a number"
        assert p.where and p.where.strip(), f"{spec.id}/{p.metric}: no 'where'"
        assert p.setting, f"{spec.id}/{p.metric} ({p.where}): empty setting"
        assert all(str(v).strip() for v in p.setting.values()), f"{spec.id}/{p.metric}: blank setting value"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_approximate_entries_name_a_figure(spec):
    for p in spec.published:
        if p.approximate:
            assert "Figure" in p.where, f"{spec.id}/{p.metric}: approximate value but 'where' names no Figure: {p.where!r}"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_references_are_complete(spec):
    for r in spec.references:
        assert r.name and r.metric and r.setting, f"{spec.id}: incomplete reference {r.name!r}"


def test_lower_is_better_metrics_are_marked():
    lower = ("fid", "perplexity", "loss", "error", "time", "energy", "overhead")
    for spec in SPECS:
        for p in spec.published:
            name = p.metric.lower()
            if any(w in name for w in lower) and "speedup" not in name and "saving" not in name:
                assert not p.higher_is_better, f"{spec.id}/{p.metric}: expected higher_is_better: false"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_show_prints_the_published_table(spec):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["show", spec.id])
    out = buf.getvalue()
    assert rc == 0
    assert "Published numbers:" in out
    assert "(none recorded yet)" not in out
    header = out.split("Published numbers:", 1)[1].splitlines()[1]
    for column in ("metric", "value", "where", "setting"):
        assert column in header
    for p in spec.published:
        assert p.where in out, f"{spec.id}: 'where' not printed: {p.where!r}"
        assert p.metric in out
    if spec.references:
        assert "Reference reproductions" in out
