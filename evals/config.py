"""Resolve a run's config: the paper's `Config` dataclass <- tier config <- arm config <- CLI.

Every layer is validated against the dataclass: an unknown key names the nearest field, a value
of the wrong type names the field and the type it should have.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import json
import typing
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from evals.contract import ContractError, PaperHooks, paper_hooks
from evals.spec import SpecError, Spec, get_tier


def paper_module(name: str) -> PaperHooks:
    """The paper module `name`, checked against the contract (evals/contract.py)."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise SpecError(f"cannot import paper module {name!r}: {e}") from None
    try:
        return paper_hooks(module)
    except ContractError as e:
        raise SpecError(str(e)) from None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings from the command line; values are read as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {pair!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 1,2,3`; None when not given (the spec's seeds)."""
    if not text:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SpecError(f"--seeds {text!r}: expected comma-separated integers, e.g. 1,2,3") from None
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"--seeds {text!r}: seeds must be distinct")
    return seeds


def build_config(config_cls: type, layers: list[tuple[str, dict[str, Any]]]):
    """Apply the named layers in order onto the dataclass defaults and validate the result."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    merged: dict[str, Any] = {}
    for origin, layer in layers:
        for key, value in layer.items():
            if key not in fields:
                near = difflib.get_close_matches(key, fields, n=3)
                hint = f"; did you mean {', '.join(near)}?" if near else f"; fields are {', '.join(fields)}"
                raise SpecError(f"{origin}: unknown config field '{key}'{hint}")
            try:
                merged[key] = TypeAdapter(_resolve_type(config_cls, key)).validate_python(value)
            except ValidationError as e:
                raise SpecError(
                    f"{origin}: config field '{key}': {value!r} is not a valid {_type_name(config_cls, key)} "
                    f"({e.errors()[0]['msg']})"
                ) from None
    return config_cls(**merged)


def _resolve_type(config_cls: type, key: str):
    """The field's type with its bounds: `steps: Annotated[int, Field(gt=0)]` is checked as declared."""
    return typing.get_type_hints(config_cls, include_extras=True)[key]


def _type_name(config_cls: type, key: str) -> str:
    t = _resolve_type(config_cls, key)
    if typing.get_origin(t) is typing.Annotated:
        t = typing.get_args(t)[0]
    return getattr(t, "__name__", str(t))


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class ResolvedRun:
    paper: str
    tier: str
    arm: str
    seed: int
    module: str
    config: Any  # the paper's Config instance

    @property
    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


def resolve(spec: Spec, tier: str, arm: str, seed: int, overrides: dict[str, Any] | None = None) -> ResolvedRun:
    t = get_tier(spec, tier)
    spec_file = spec.folder / "spec.yaml"
    if arm not in t.arms:
        raise SpecError(f"{spec_file}: tier '{tier}' has no arm {arm!r} (arms: {', '.join(t.arms)})")
    arm_spec = t.arms[arm]
    module_name = arm_spec.module or spec.module
    hooks = paper_module(module_name)
    layers = [
        (f"{spec_file}: tiers.{tier}.config", t.config),
        (f"{spec_file}: tiers.{tier}.arms.{arm}.config", arm_spec.config),
        ("--set", overrides or {}),
    ]
    return ResolvedRun(spec.id, tier, arm, seed, module_name, build_config(hooks.Config, layers))
