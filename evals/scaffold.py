"""`repro new PAPER`: the files a paper's implementation starts from, in the shape of the contract.

It writes, beside the paper's existing `spec.yaml`, a package whose module keeps the contract
(`Config`, `build`, `train`; see evals/contract.py) but trains nothing: `build` and `train` raise
`NotImplementedError` naming the file to fill in. It adds no tier to the spec, so the paper stays
`not-implemented` on `repro status` and on the site until a tier with real code and records exists.
A file that exists is never overwritten.
"""

from __future__ import annotations

from pathlib import Path

from evals.paths import REPRODUCTIONS
from evals.spec import SpecError, load_spec, paper_ids, unknown_paper

MODULE = '''"""{title} (arXiv {arxiv}).

The paper's contribution, implemented from scratch, top to bottom, each equation named as the
paper numbers it. The contract this module keeps: evals/contract.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from evals.contract import RunContext


@dataclass
class Config:
    """The run's settings; every field has a default, and a tier sets only what it changes."""

    steps: int = 1000
    lr: float = 1e-3
    log_every: int = 50


def build(cfg: Config):
    """The untrained thing (a `SafetensorsModule` of evals/contract.py, with the capabilities its
    evaluators need: `act`, `predict_logits`, `sample`, ...)."""
    raise NotImplementedError("{module}.build: not written yet (reproductions/{id}/{id}.py)")


def train(cfg: Config, run: RunContext):
    """Train through the run context: `run.progress`, `run.log`, `run.advance`,
    `run.maybe_checkpoint` and `run.resume_state`; return the trained thing."""
    raise NotImplementedError("{module}.train: not written yet (reproductions/{id}/{id}.py)")
'''

INIT = '''"""{title} (arXiv {arxiv})."""

from {module}.{id} import Config, build, train

__all__ = ["Config", "build", "train"]
'''

README = '''# {title}

What the paper claims, and the tiers that test it (spec.yaml): which claim each mini-tier target
states, and why a comparison is a target or only reported.

## Implementation details that differ from the paper

Every departure from the paper's setting, with its reason (the site shows this section).
'''


def scaffold(paper: str, root: Path = REPRODUCTIONS) -> list[Path]:
    """Write the missing files of `paper`'s package; returns those written."""
    if paper not in paper_ids():
        raise unknown_paper(paper, paper_ids())
    spec = load_spec(paper)
    if spec.tiers:
        raise SpecError(f"{root / paper / 'spec.yaml'}: {paper} has tiers already: its code exists")
    fields = {"title": spec.title, "arxiv": spec.arxiv or "-", "module": spec.module, "id": paper}
    written = []
    for name, text in (("__init__.py", INIT), (f"{paper}.py", MODULE), ("README.md", README)):
        path = root / paper / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text.format(**fields))
            written.append(path)
    return written


def cmd_new(args) -> None:
    written = scaffold(args.paper)
    for path in written:
        print(f"wrote {path.relative_to(REPRODUCTIONS.parent)}")
    print(f"{args.paper}: not-implemented until its spec has a tier with code and records "
          f"(CONTRIBUTING.md, 'Adding a paper')")


def add_parser(sub) -> None:
    s = sub.add_parser("new", help="start a paper's package: a module in the shape of the contract, "
                                   "a README; the paper stays not-implemented")
    s.add_argument("paper")
    s.set_defaults(fn=cmd_new)
