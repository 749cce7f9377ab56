"""The spec: what a paper published and the tiers at which we reproduce it.

One YAML file per paper, `reproductions/<id>/spec.yaml`, validated by the pydantic models below.
Every error names the file and the field (`SpecError`).
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evals.errors import SpecError
from evals.evaluators import EvaluatorSpec, resolve_evaluator
from evals.paths import REPRODUCTIONS


AREAS = (
    "llm-backbone",
    "vision-multimodal",
    "generative",
    "alignment-reasoning",
    "efficiency-systems",
    "reinforcement-learning",
)
TIER_NAMES = ("smoke", "mini", "full")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Published(Strict):
    """One number the paper published, with where it stands and how it was measured."""

    metric: str
    value: float
    unit: str | None = None
    where: str
    setting: dict[str, Any]
    approximate: bool = False
    higher_is_better: bool = True
    note: str | None = None


class Reference(Strict):
    """A number from another reproduction (CleanRL, the RL Zoo, an official repo): an anchor."""

    name: str
    url: str | None = None
    metric: str
    value: float
    unit: str | None = None
    where: str | None = None
    setting: dict[str, Any] = Field(default_factory=dict)


# A term is `metric[arm]`, optionally scaled (`0.8 * steps[adamw]`), a plain number, or the
# difference of two metrics in parentheses (`(accuracy[resnet_1k] - accuracy[vit_1k])`): the
# per-seed difference, so that two differences compare paired over seeds.
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = rf"(?:(?P<{{p}}scale>{_NUMBER})\s*\*\s*)?(?P<{{p}}metric>[A-Za-z_][\w.]*)\[(?P<{{p}}arm>[\w.-]+)\]|(?P<{{p}}const>{_NUMBER})"
_DIFF = (r"\(\s*(?P<{p}dmetric>[A-Za-z_][\w.]*)\[(?P<{p}darm>[\w.-]+)\]\s*-\s*"
         r"(?P<{p}mmetric>[A-Za-z_][\w.]*)\[(?P<{p}marm>[\w.-]+)\]\s*\)")
_SIDE = rf"(?:{_DIFF}|{_TERM})"
_EXPR = re.compile(
    rf"^\s*{_SIDE.format(p='l')}\s*(?P<op>>=|<=|>|<)\s*{_SIDE.format(p='r')}\s*$"
)


class Term(Strict):
    metric: str | None = None
    arm: str | None = None
    scale: float = 1.0
    const: float | None = None
    minus_metric: str | None = None   # a difference: (metric[arm] - minus_metric[minus_arm])
    minus_arm: str | None = None

    def reads(self) -> list[tuple[str, str]]:
        """The (metric, arm) pairs the term reads."""
        if self.const is not None:
            return []
        return [(self.metric, self.arm)] + ([(self.minus_metric, self.minus_arm)] if self.minus_arm is not None else [])

    def __str__(self) -> str:
        if self.const is not None:
            return f"{self.const:g}"
        if self.minus_arm is not None:
            return f"({self.metric}[{self.arm}] - {self.minus_metric}[{self.minus_arm}])"
        prefix = "" if self.scale == 1.0 else f"{self.scale:g} * "
        return f"{prefix}{self.metric}[{self.arm}]"


def parse_expr(expr: str) -> tuple[Term, str, Term]:
    m = _EXPR.match(expr)
    if not m:
        raise ValueError(
            f"cannot parse target {expr!r}: expected 'metric[arm] OP number' or "
            "'metric[arm] OP [k *] metric[arm]' with OP one of >=, <=, >, < (either side may also be "
            "a difference '(metric[arm] - metric[arm])')"
        )

    def term(p: str) -> Term:
        if m.group(f"{p}dmetric") is not None:
            return Term(metric=m.group(f"{p}dmetric"), arm=m.group(f"{p}darm"),
                        minus_metric=m.group(f"{p}mmetric"), minus_arm=m.group(f"{p}marm"))
        if m.group(f"{p}const") is not None:
            return Term(const=float(m.group(f"{p}const")))
        scale = m.group(f"{p}scale")
        return Term(metric=m.group(f"{p}metric"), arm=m.group(f"{p}arm"), scale=float(scale) if scale else 1.0)

    lhs, rhs = term("l"), term("r")
    if lhs.const is not None:
        raise ValueError(f"target {expr!r}: the left side must be metric[arm] or a difference of two")
    return lhs, m.group("op"), rhs


class Target(Strict):
    """A condition a tier must meet, tested over seeds (the tests are in evals/stats.py).

    Tests:
    - `bootstrap` (default): the 95% percentile-bootstrap CI over seeds of the mean of the left
      side (or, against another arm, of the paired per-seed difference) lies wholly on the
      passing side of the bound;
    - `all_seeds`: every seed meets the condition on its own;
    - `mean`: the mean over seeds meets it (for reported, not claimed, numbers).
    """

    expr: str
    test: Literal["bootstrap", "all_seeds", "mean"] = "bootstrap"
    description: str | None = None

    @field_validator("expr")
    @classmethod
    def _parses(cls, v: str) -> str:
        parse_expr(v)
        return v

    @property
    def parsed(self) -> tuple[Term, str, Term]:
        return parse_expr(self.expr)

    def arms(self) -> set[str]:
        lhs, _, rhs = self.parsed
        return {arm for t in (lhs, rhs) for _, arm in t.reads()}


class Superseded(Strict):
    """A target that no longer counts, kept with what it got and why it went. A target is replaced
    only where it did not state the paper's claim or could not be met by construction, never
    because a run missed it; the spec keeps it (the site shows it) and its records go stale with
    the spec version it counted under."""

    expr: str
    description: str | None = None
    spec_version: int = Field(ge=1)   # the spec version under which it counted
    result: str                       # what it got: the measured value and CI, per seed where it helps
    reason: str                       # why it went

    @field_validator("expr")
    @classmethod
    def _parses(cls, v: str) -> str:
        parse_expr(v)
        return v


class Arm(Strict):
    """A named variant run side by side with the others: config overrides, or another module."""

    description: str | None = None
    module: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)


class Sweep(Strict):
    """A metric against a setting, drawn on the site (mean over seeds with its 95% bootstrap CI).
    Either arms that differ in one config field `x` (a training-set-size curve, a mask-ratio
    sweep: each arm one point), or, with `values`, a setting one run measures at several values,
    each under its own metric name: `metrics` are then templates with `{x}` (speculative
    decoding's `speedup_greedy_g{x}` at gamma 1..8), `x` names the setting, and one arm is a series."""

    x: str                                    # the config field read from each run's record, or the setting's name
    metrics: list[str] = Field(min_length=1)
    series: dict[str, list[str]] = Field(min_length=1)  # legend label -> its arms, in order of x
    values: list[float] | None = None         # the setting's values inside each run (metrics are templates)
    y: str | None = None                      # the y axis's label (default: the metrics' names)
    log_x: bool = False
    title: str | None = None

    @model_validator(mode="after")
    def _points(self) -> "Sweep":
        within = self.values is not None
        if within and len(self.values) < 2:
            raise ValueError(f"sweep over {self.x!r}: values needs at least two, got {self.values}")
        for m in self.metrics:
            if within != ("{x}" in m):
                raise ValueError(f"sweep over {self.x!r}: metric {m!r} " + (
                    "needs '{x}' where each value goes (the sweep has values)" if within else
                    "has '{x}' but the sweep has no values"))
        for label, arms in self.series.items():
            if len(arms) < (1 if within else 2):
                raise ValueError(f"series {label!r} needs at least two arms, got {arms}")
        return self

    def metric_at(self, template: str, value: float) -> str:
        """A template's metric name at one of `values` (integral values written without '.0')."""
        return template.replace("{x}", f"{value:g}")

    def named_metrics(self) -> list[str]:
        """Every metric name the sweep reads."""
        if self.values is None:
            return list(self.metrics)
        return [self.metric_at(m, v) for m in self.metrics for v in self.values]


class Tier(Strict):
    config: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int]
    min_seeds: int | None = None
    arms: dict[str, Arm] = Field(default_factory=lambda: {"ours": Arm()})
    evaluators: list[EvaluatorSpec] = Field(default_factory=list)
    targets: list[Target] = Field(default_factory=list)
    deviations: list[str] = Field(default_factory=list)
    superseded: list[Superseded] = Field(default_factory=list)
    # Re-execution by CI stops a run at the first value it logs past this step (its config
    # unchanged, so every schedule is the full run's) and compares the values logged up to it;
    # None: the whole run is re-executed.
    verify_steps: int | None = Field(None, ge=1)
    # Names (shell patterns) of the curves, metrics and samples that measure time (tokens per
    # second, ...): a re-execution cannot repeat them, so it does not compare them, and says so.
    verify_timings: list[str] = Field(default_factory=list)
    sweeps: list[Sweep] = Field(default_factory=list)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("a tier needs at least one seed")
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Tier":
        if self.min_seeds is not None and not 1 <= self.min_seeds <= len(self.seeds):
            raise ValueError(f"min_seeds={self.min_seeds} must lie in 1..{len(self.seeds)}")
        for t in self.targets:
            unknown = t.arms() - set(self.arms)
            if unknown:
                raise ValueError(f"target {t.expr!r} names unknown arm(s) {sorted(unknown)}; arms are {sorted(self.arms)}")
        for s in self.sweeps:
            unknown = {a for arms in s.series.values() for a in arms} - set(self.arms)
            if unknown:
                raise ValueError(f"sweep over {s.x!r} names unknown arm(s) {sorted(unknown)}; arms are {sorted(self.arms)}")
        return self

    @property
    def required_seeds(self) -> int:
        return self.min_seeds if self.min_seeds is not None else len(self.seeds)


class Spec(Strict):
    id: str
    version: int = 1
    title: str
    authors: list[str]
    year: int
    arxiv: str | None = None
    url: str | None = None
    area: Literal[AREAS]  # type: ignore[valid-type]
    builds_on: list[str] = Field(default_factory=list)
    module: str | None = None  # the paper's module; default reproductions.<id>
    summary: str | None = None
    published: list[Published] = Field(default_factory=list)
    references: list[Reference] = Field(default_factory=list)
    tiers: dict[Literal[TIER_NAMES], Tier] = Field(default_factory=dict)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _default_module(self) -> "Spec":
        if self.module is None:
            self.module = f"reproductions.{self.id}"
        return self

    @model_validator(mode="after")
    def _superseded_in_the_past(self) -> "Spec":
        for name, tier in self.tiers.items():
            for old in tier.superseded:
                if old.spec_version >= self.version:
                    raise ValueError(f"tiers.{name}.superseded: {old.expr!r} counted under spec version "
                                     f"{old.spec_version}, which must be below the spec's version {self.version} "
                                     "(bump `version` when a target is replaced)")
        return self

    @property
    def folder(self) -> Path:
        return REPRODUCTIONS / self.id

    @property
    def implemented(self) -> bool:
        return bool(self.tiers)


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_spec_file(path: Path) -> Spec:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise SpecError(f"{path}: field '{_format_loc(err['loc'])}': {err['msg']}{more}") from None
    if spec.id != path.parent.name:
        raise SpecError(f"{path}: field 'id': {spec.id!r} does not match its folder {path.parent.name!r}")
    for name, tier in spec.tiers.items():
        check_metric_names(tier, f"{path}: field 'tiers.{name}")
    return spec


def check_metric_names(tier: Tier, where: str) -> None:
    """Each metric a target or a sweep names is one that an evaluator of the tier reports."""
    evaluators = [resolve_evaluator(e, f"{where}.evaluators[{i}]'") for i, e in enumerate(tier.evaluators)]
    named = [(f"targets[{i}]", metric) for i, t in enumerate(tier.targets) for term in t.parsed[::2]
             for metric, _ in term.reads()]
    named += [(f"sweeps[{i}].metrics", m) for i, s in enumerate(tier.sweeps) for m in s.named_metrics()]
    for field_, metric in named:
        if not any(ev.reports(metric, options) for ev, options in evaluators):
            kinds = ", ".join(ev.name for ev, _ in evaluators) or "none"
            raise SpecError(f"{where}.{field_}': no evaluator of the tier reports a metric {metric!r} "
                            f"(evaluators: {kinds})")


def paper_ids() -> list[str]:
    return sorted(p.parent.name for p in REPRODUCTIONS.glob("*/spec.yaml"))


def unknown_paper(paper: str, known: list[str]) -> SpecError:
    near = difflib.get_close_matches(paper, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; known papers: {', '.join(known)}"
    return SpecError(f"unknown paper {paper!r}{hint}")


@lru_cache(maxsize=None)
def load_spec(paper: str) -> Spec:
    path = REPRODUCTIONS / paper / "spec.yaml"
    if not path.is_file():
        raise unknown_paper(paper, paper_ids())
    return load_spec_file(path)


def link_problem(spec: Spec, known: set[str], root: Path = REPRODUCTIONS) -> SpecError | None:
    """Why `spec`'s `builds_on` is wrong (a paper not in `known`), None when it is not."""
    missing = [b for b in spec.builds_on if b not in known]
    return SpecError(f"{root / spec.id / 'spec.yaml'}: field 'builds_on': unknown paper(s) {missing}") if missing else None


def with_checked_links(specs: list[Spec], root: Path = REPRODUCTIONS) -> list[Spec]:
    """`specs` (each read from `root/<id>/spec.yaml`), once every `builds_on` names one of them."""
    for s in specs:
        if problem := link_problem(s, {s.id for s in specs}, root):
            raise problem
    return specs


def all_specs() -> list[Spec]:
    return with_checked_links([load_spec(p) for p in paper_ids()])


def readable_specs() -> tuple[list[Spec], list[SpecError]]:
    """Every paper's spec that loads, and the error of each that does not (one broken spec does
    not hide the others)."""
    specs, errors = [], []
    for paper in paper_ids():
        try:
            specs.append(load_spec(paper))
        except SpecError as e:
            errors.append(e)
    problems = [link_problem(s, set(paper_ids())) for s in specs]
    return [s for s, p in zip(specs, problems) if p is None], errors + [p for p in problems if p]


def get_tier(spec: Spec, tier: str) -> Tier:
    if tier not in spec.tiers:
        have = ", ".join(spec.tiers) or "none yet"
        raise SpecError(f"{spec.folder / 'spec.yaml'}: paper {spec.id!r} has no tier {tier!r} (tiers: {have})")
    return spec.tiers[tier]
