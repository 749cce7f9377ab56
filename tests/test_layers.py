"""The layers point one way (CONTRIBUTING.md, 'Adding a paper'; site/architecture.md):

- the harness (`evals/`) and the site (`leaderboard/`) never import a paper (`reproductions`);
- the task package `evals.tasks` is a leaf: it imports nothing else of the project;
- a paper imports, of the harness, only the task package and the contract;
- no module imports itself back through others (no import cycle).

Found by reading every import statement (lazy ones inside functions included), not by running them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from evals.paths import ROOT

PACKAGES = ("evals", "leaderboard", "reproductions", "scripts")
PAPER_MAY_IMPORT = ("evals.tasks", "evals.contract")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The project modules `path` imports (for `from pkg import name`: pkg.name when that is a
    module, else pkg)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in MODULES else target)
    return {m for m in out if m.split(".")[0] in PACKAGES}


FILES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
MODULES = {_module_name(p): p for p in FILES}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_harness_and_the_site_never_import_a_paper():
    bad = [f"{m} imports {t}" for m, ts in GRAPH.items() if m.split(".")[0] in ("evals", "leaderboard")
           for t in ts if _within(t, "reproductions")]
    assert not bad, "\n".join(bad)


def test_the_task_package_is_a_leaf():
    bad = [f"{m} imports {t}" for m, ts in GRAPH.items() if _within(m, "evals.tasks")
           for t in ts if not _within(t, "evals.tasks")]
    assert not bad, "\n".join(bad)


def test_papers_import_only_the_tasks_and_the_contract_of_the_harness():
    bad = [f"{m} imports {t}" for m, ts in GRAPH.items() if _within(m, "reproductions")
           for t in ts if t.split(".")[0] != "reproductions" and not any(_within(t, p) for p in PAPER_MAY_IMPORT)]
    assert not bad, "\n".join(bad)


def _cycle() -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if t not in GRAPH or t == m:
                continue
            if colour.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in colour and (found := visit(t)):
                return found
        stack.pop()
        colour[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in colour and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("bad, rule", [
    ({"evals.x": {"reproductions.sac"}}, "harness"),
    ({"reproductions.sac": {"evals.tier_runner"}}, "papers"),
    ({"evals.a": {"evals.b"}, "evals.b": {"evals.a"}}, "cycle"),
])
def test_the_rules_catch_what_they_name(bad, rule):
    globals_ = globals()
    saved = globals_["GRAPH"]
    globals_["GRAPH"] = bad
    try:
        test = {"harness": test_the_harness_and_the_site_never_import_a_paper,
                "papers": test_papers_import_only_the_tasks_and_the_contract_of_the_harness,
                "cycle": test_no_import_cycle}[rule]
        with pytest.raises(AssertionError):
            test()
    finally:
        globals_["GRAPH"] = saved
