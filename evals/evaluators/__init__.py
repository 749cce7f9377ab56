"""Common evaluators: named, versioned, and the same for every arm and every contributor.

An evaluator is a function `(agent, config, options) -> Measured` registered with its name, its
version (bumped by any change that alters results) and a pydantic model of its options; the
registry stamps the name and version on the `EvalResult` it makes of the measurement, so each is
declared once. What an evaluator needs of the trained thing is a capability of
`evals.contract` (an `Actor`, a `Classifier`, ...); the data it scores on comes from `evals.tasks`.

A summary metric is checkable from the record alone when it is the mean of the samples of its own
name; an evaluator whose metrics are derived otherwise (an accuracy from per-image correctness,
BLEU from n-gram counts, a slope fitted to measurements) registers `derive`, which recomputes
them from a result's samples and protocol, so `repro verify` can check those too.

An evaluator may also draw what it measured (`Measured.images`, file name -> PNG or JPEG bytes:
`retrieval`'s examples): the harness writes the pictures into the run's folder, and they are
published beside the record like the images training saved there; they are no part of the record.

Each evaluator also declares the names of the metrics it reports (`metric_names(options)`, shell
patterns where a name carries a task or a method), so that a spec's target naming a metric no
evaluator of its tier reports is an error when the spec is loaded, not a target never met.

For `repro reproduce --dry-run` (evals/dry_run.py) an evaluator may declare three hooks, none of
which changes what it measures in a run:
- `tiny(options) -> options`: the same options on a tiny budget (a few episodes, samples or
  tokens), so the dry run scores the built model in seconds;
- `check(agent, config, options) -> list[str]`: what in the tier's own options cannot work with
  this model and data (lm_loss: more tokens than the split holds), found without running them;
- `stand_in(options, folder) -> (options, missing)`: what the evaluator itself reads that is not
  on this machine (weights, a task's data), each named with where it looked, and options that
  read a tiny stand-in written under `folder` instead.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from evals.errors import SpecError
from evals.record import EvalResult


class EvaluatorSpec(BaseModel):
    """A spec's reference to a common evaluator by name; its options are checked by the evaluator's
    own model."""

    model_config = ConfigDict(extra="allow")
    kind: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


@dataclass
class Measured:
    """What an evaluator function returns: summary metrics, the per-episode / per-sample values
    they come from, and the protocol."""

    metrics: dict[str, float]
    samples: dict[str, list[float]] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    # file name -> PNG or JPEG bytes: pictures of what was measured (retrieval examples), written
    # into the run's folder and so published beside its record; never part of the record itself
    images: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluator:
    name: str
    version: int
    options: type[BaseModel]
    fn: Callable[[Any, Any, BaseModel], Measured]
    metric_names: Callable[[BaseModel], list[str]]
    derive: Callable[[EvalResult], dict[str, float]] | None = None
    tiny: Callable[[BaseModel], BaseModel] | None = None                          # dry runs: a tiny budget
    check: Callable[[Any, Any, BaseModel], list[str]] | None = None               # dry runs: settings that cannot work
    stand_in: Callable[[BaseModel, Path], tuple[BaseModel, list[str]]] | None = None  # dry runs: missing inputs

    def reports(self, metric: str, options: BaseModel) -> bool:
        return any(fnmatch.fnmatchcase(metric, p) for p in self.metric_names(options))

    def __call__(self, agent, config, options: BaseModel) -> EvalResult:
        return self.measure(agent, config, options)[0]

    def measure(self, agent, config, options: BaseModel) -> tuple[EvalResult, dict[str, bytes]]:
        """The stamped result and the images the evaluator drew (`Measured.images`)."""
        m = self.fn(agent, config, options)
        return EvalResult(evaluator=self.name, version=self.version, metrics=m.metrics, samples=m.samples,
                          protocol=m.protocol), dict(m.images)


REGISTRY: dict[str, Evaluator] = {}


def register(name: str, version: int, options: type[BaseModel], metric_names: Callable[[BaseModel], list[str]],
             derive: Callable[[EvalResult], dict[str, float]] | None = None,
             tiny: Callable[[BaseModel], BaseModel] | None = None,
             check: Callable[[Any, Any, BaseModel], list[str]] | None = None,
             stand_in: Callable[[BaseModel, Path], tuple[BaseModel, list[str]]] | None = None):
    def deco(fn) -> Evaluator:  # the name now calls the registered evaluator: an EvalResult, stamped
        REGISTRY[name] = Evaluator(name, version, options, fn, metric_names, derive, tiny, check, stand_in)
        return REGISTRY[name]

    return deco


def shrunk(options: BaseModel, **budget: Any) -> BaseModel:
    """`options` with each named budget field at most the value given (a `tiny` hook's helper):
    a budget already smaller stays, and the result is validated by the options' own model."""
    smaller = {k: v if getattr(options, k) in (None, 0) else min(getattr(options, k), v) for k, v in budget.items()}
    return type(options).model_validate(options.model_dump() | smaller)


def resolve_evaluator(spec: EvaluatorSpec, where: str) -> tuple[Evaluator, BaseModel]:
    _load_builtin()
    if spec.kind not in REGISTRY:
        raise SpecError(f"{where}: unknown evaluator kind {spec.kind!r} (known: {', '.join(sorted(REGISTRY))})")
    ev = REGISTRY[spec.kind]
    try:
        opts = ev.options.model_validate(spec.options)
    except ValidationError as e:
        err = e.errors()[0]
        raise SpecError(f"{where}: evaluator {spec.kind!r} option '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
    return ev, opts


@lru_cache(maxsize=None)
def _load_builtin() -> None:
    """Import every module of this package once; each registers its evaluators."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def registered_version(name: str) -> int | None:
    """The version of the evaluator of that name in this code, None where there is none."""
    _load_builtin()
    return REGISTRY[name].version if name in REGISTRY else None


def derived_metrics(result: EvalResult) -> dict[str, float]:
    """The metrics of `result` that its evaluator recomputes from the samples and protocol (none
    for an evaluator without `derive`). Raises KeyError / ValueError when the samples it needs
    are missing or malformed."""
    _load_builtin()
    ev = REGISTRY.get(result.evaluator)
    return ev.derive(result) if ev is not None and ev.derive is not None else {}
