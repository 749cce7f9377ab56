"""Common evaluators: named, versioned, and the same for every arm and every contributor.

An evaluator is a function `(agent, config, options) -> EvalResult` registered with its name,
its version (bumped by any change that alters results) and a pydantic model of its options.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from evals.record import EvalResult
from evals.spec import EvaluatorSpec, SpecError


@dataclass(frozen=True)
class Evaluator:
    name: str
    version: int
    options: type[BaseModel]
    fn: Callable[[Any, Any, BaseModel], EvalResult]

    def __call__(self, agent, config, options: BaseModel) -> EvalResult:
        return self.fn(agent, config, options)


REGISTRY: dict[str, Evaluator] = {}


def register(name: str, version: int, options: type[BaseModel]):
    def deco(fn):
        REGISTRY[name] = Evaluator(name, version, options, fn)
        return fn

    return deco


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
