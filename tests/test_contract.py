"""Every paper module (and every module an arm names) keeps the contract of evals/contract.py, and
the contract's checks name what is missing."""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass

import pytest
import torch

from evals import contract
from evals.contract import ContractError, paper_hooks
from evals.run_context import Run
from evals.spec import all_specs


def _modules() -> list[str]:
    names = set()
    for spec in all_specs():
        for tier in spec.tiers.values():
            names |= {arm.module or spec.module for arm in tier.arms.values()}
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_every_paper_module_keeps_the_contract(name):
    hooks = paper_hooks(importlib.import_module(name))
    assert hooks.Config() is not None  # every field has a default: a tier sets only what it changes


def _module(**pieces) -> types.ModuleType:
    m = types.ModuleType("reproductions.fake")

    @dataclass
    class Config:
        steps: int = 1

    base = {"Config": Config, "build": lambda config: None, "train": lambda config, run: None}
    for k, v in {**base, **pieces}.items():
        if v is not None:
            setattr(m, k, v)
    return m


@pytest.mark.parametrize("piece", ["Config", "build", "train"])
def test_a_missing_piece_is_named(piece):
    m = _module()
    delattr(m, piece)
    with pytest.raises(ContractError, match=f"'reproductions.fake' has no '{piece}'"):
        paper_hooks(m)


def test_a_malformed_piece_is_named():
    with pytest.raises(ContractError, match="'Config' must be a dataclass"):
        paper_hooks(_module(Config=dict))
    with pytest.raises(ContractError, match="'train' must accept 2 positional"):
        paper_hooks(_module(train=lambda config: None))
    with pytest.raises(ContractError, match="'dry_run_step' is not callable"):
        paper_hooks(_module(dry_run_step=3))


def test_optional_hooks_default():
    hooks = paper_hooks(_module())
    assert hooks.dry_run_step is None and hooks.required_data(None) == [] and hooks.data_fingerprint(None) is None


def test_the_run_contexts_keep_the_protocol(tmp_path):
    run = Run(tmp_path, seed=1, device=torch.device("cpu"), progress=False, tensorboard=False)
    try:
        assert isinstance(run, contract.RunContext)
    finally:
        run.close()
    assert isinstance(contract.QuietRun(), contract.RunContext)


def test_a_missing_capability_names_the_evaluator_and_the_member():
    class Half:
        def held_out(self):
            return []

    with pytest.raises(ContractError, match=r"bleu: the trained Half is not a Translator \(missing: translate"):
        contract.capability(Half(), contract.Translator, "bleu")


def test_the_scaffold_keeps_the_contract_and_implements_nothing(tmp_path, monkeypatch):
    from evals.scaffold import scaffold
    from evals.spec import SpecError, load_spec

    paper = next((s.id for s in all_specs() if not s.tiers), None)  # a paper not implemented yet
    if paper is None:
        pytest.skip("every paper has tiers: nothing left to scaffold")
    written = scaffold(paper, root=tmp_path)
    assert sorted(p.name for p in written) == ["README.md", "__init__.py", f"{paper}.py"]
    module = types.ModuleType(f"reproductions.{paper}.{paper}")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # as an import would (dataclass looks it up)
    exec(compile((tmp_path / paper / f"{paper}.py").read_text(), f"{paper}.py", "exec"), module.__dict__)
    hooks = paper_hooks(module)
    with pytest.raises(NotImplementedError, match="not written yet"):
        hooks.build(hooks.Config())
    assert not load_spec(paper).tiers  # so the paper stays not-implemented
    (tmp_path / paper / f"{paper}.py").write_text("# mine")
    assert scaffold(paper, root=tmp_path) == [] and (tmp_path / paper / f"{paper}.py").read_text() == "# mine"
    with pytest.raises(SpecError, match="has tiers already"):
        scaffold("sac", root=tmp_path)


def test_contributing_lists_every_capability_an_evaluator_asks_for():
    """CONTRIBUTING.md's capability table names each protocol an evaluator asks an agent for, with
    every member of that protocol, so a paper author reads there what to implement."""
    import inspect
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    table = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (.*?) \|", (root / "CONTRIBUTING.md").read_text(),
                                                          re.MULTILINE)}
    asked = set()
    for f in (root / "evals" / "evaluators").glob("*.py"):
        for names in re.findall(r"^from evals\.contract import \(?([\w, ]+)", f.read_text(), re.MULTILINE):
            asked |= {n.strip() for n in names.split(",")} - {"capability", ""}
    assert {"Actor", "Classifier", "ZeroShotClassifier"} <= asked, "the evaluators' imports no longer match the pattern"
    missing = sorted(asked - set(table))
    assert not missing, f"CONTRIBUTING.md's capability table lacks {missing}"
    for name in asked:
        protocol = getattr(contract, name)
        members = [n for n in vars(protocol) if not n.startswith("_")] + list(getattr(protocol, "__annotations__", {}))
        absent = [m for m in members if not re.search(rf"`{m}[`(]", table[name])]
        assert not absent, f"CONTRIBUTING.md's row for {name} lacks its members {absent}"
