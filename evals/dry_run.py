"""`repro reproduce PAPER --tier T --dry-run`: the CPU check of a tier before anyone spends a GPU
day on it. For each arm: resolve the config, check the data, build the model, take one
optimisation step (the paper's `dry_run_step`), then run each of the tier's evaluators, with the
tier's own options, on the built model:

- the options are first checked against this model and the data (an evaluator's `check`: lm_loss
  asked for more tokens than the validation split holds, a task lm-eval does not know, ...);
- then the evaluator runs on a tiny budget (its `tiny` hook: a few episodes, images, sentences,
  tokens or documents), so an evaluation that cannot work fails here, in seconds.

Where the tier's data or weights are absent (the paper's `required_data`, or what an evaluator
reads itself, e.g. Inception's weights or lm-eval's datasets), the dry run names what is missing
and where it looked, then goes on with a tiny stand-in in the same on-disk format, written in a
temporary folder (the paper's `stand_in_data` hook, an evaluator's `stand_in`), so the real
loaders, the model, the step and the evaluators are still exercised. Evaluator options that name
the same path as a config field the stand-in replaced (fid's `data_root`) follow it.

Exit status (also `repro reproduce --help`):
  0  ready: every arm built, stepped and evaluated on the real data;
  1  failed: a build, a step or an evaluator raised, or a tier setting cannot work (named);
  2  invalid: an unknown paper, tier or arm, a bad config, or data missing that the paper has
     no stand-in for (nothing was exercised past the config);
  3  code fine, data missing: everything ran, on stand-ins for the data named as missing.
Nothing is written to results/ or runs/.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from evals.config import paper_module, resolve
from evals.spec import SpecError, get_tier, load_spec

READY, FAILED, INVALID, DATA_MISSING = 0, 1, 2, 3
EXIT_CODES = {READY: "ready", FAILED: "failed", INVALID: "invalid", DATA_MISSING: "code fine, data missing"}


def _changed_paths(before: Any, after: Any) -> dict[str, str]:
    """{old value: new value} of the string fields the stand-in changed."""
    old, new = dataclasses.asdict(before), dataclasses.asdict(after)
    return {v: new[k] for k, v in old.items() if isinstance(v, str) and v and new.get(k) != v}


def follow(options: BaseModel, moved: dict[str, str]) -> BaseModel:
    """`options` with each string option that names a moved path (a config value the stand-in
    replaced) at its new place."""
    update = {k: moved[v] for k, v in options.model_dump().items() if isinstance(v, str) and v in moved}
    return options.model_copy(update=update) if update else options


class _Arm:
    """What one arm's dry run found."""

    def __init__(self, name: str):
        self.name, self.missing, self.failures = name, [], []

    def say(self, text: str, err: bool = False) -> None:
        print(f"[{self.name}] {text}", file=sys.stderr if err else sys.stdout, flush=True)

    def fail(self, what: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.failures.append(f"{what}: {text}")
        self.say(f"FAILED {what}: {text}", err=True)
        if isinstance(error, BaseException):
            print("".join(traceback.format_exception(error)[-6:]).rstrip(), file=sys.stderr)

    def missing_data(self, items: list[str]) -> None:
        self.missing += items
        for m in items:
            self.say(f"missing: {m}", err=True)


def dry_run(paper: str, tier: str, seeds: list[int] | None = None, arms: list[str] | None = None,
            overrides: dict[str, Any] | None = None) -> int:
    """Run the dry run of a tier and return its exit status (module docstring)."""
    import torch

    from evals.tier_runner import evaluators_for

    spec = load_spec(paper)
    t = get_tier(spec, tier)
    seed = (seeds or t.seeds)[0]
    evaluators = evaluators_for(paper, tier)  # a bad evaluator option fails before anything is built
    resolved_arms = [resolve(spec, tier, arm, seed, overrides) for arm in arms or list(t.arms)]
    reports = []
    with tempfile.TemporaryDirectory(prefix=f"repro-dry-run-{paper}-") as tmp:
        for resolved in resolved_arms:
            arm = _Arm(resolved.arm)
            reports.append(arm)
            module = paper_module(resolved.module)
            config = resolved.config
            arm.say(f"config: {json.dumps(resolved.config_dict)}")
            folder = Path(tmp) / resolved.arm
            folder.mkdir()
            moved: dict[str, str] = {}
            missing = module.required_data(config)
            if missing:
                arm.missing_data(missing)
                if module.stand_in_data is None:
                    raise SpecError(f"{paper}/{tier} arm {resolved.arm}: missing data: " + "; ".join(missing)
                                    + f" (and {resolved.module} has no stand_in_data hook to stand in for it)")
                stand_in = module.stand_in_data(config, folder / "data")
                moved = _changed_paths(config, stand_in)
                still = module.required_data(stand_in)
                if still:
                    arm.fail("stand-in", f"{resolved.module}'s stand_in_data leaves data missing: " + "; ".join(still))
                    continue
                arm.say(f"stand-in data written under {folder / 'data'} (" + (", ".join(
                    f"{k}={v}" for k, v in dataclasses.asdict(stand_in).items() if dataclasses.asdict(config)[k] != v)
                    or "config unchanged") + ")")
                config = stand_in
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            try:
                agent = module.build(config)
            except Exception as e:  # noqa: BLE001 - every failure is reported, the other arms go on
                arm.fail("build", e)
                continue
            arm.say(f"built {type(agent).__name__}: {agent.num_parameters():,} parameters in "
                    f"{time.perf_counter() - t0:.1f}s")
            if module.dry_run_step is None:
                arm.say("(the module has no dry_run_step: no optimisation step)")
            else:
                t0 = time.perf_counter()
                try:
                    out = module.dry_run_step(agent, config)
                except Exception as e:  # noqa: BLE001
                    arm.fail("dry_run_step", e)
                    continue
                arm.say(f"one optimisation step on a tiny CPU batch in {time.perf_counter() - t0:.1f}s: "
                        + ", ".join(f"{k}={v:.4g}" for k, v in out.items()))
            for i, (ev, options) in enumerate(evaluators):
                _evaluate(arm, ev, follow(options, moved), agent, config, folder / f"evaluator-{i}")
    return _summary(paper, tier, reports)


def _evaluate(arm: _Arm, ev, options: BaseModel, agent, config, folder: Path) -> None:
    """One evaluator: the tier's options checked, then run on stand-ins where its inputs are
    missing, on a tiny budget."""
    label = f"evaluator {ev.name}"
    t0 = time.perf_counter()
    try:
        problems = ev.check(agent, config, options) if ev.check else []
        for p in problems:
            arm.fail(f"{label}: the tier's options", p)
        run_options = options
        if ev.stand_in is not None:
            folder.mkdir(parents=True, exist_ok=True)
            run_options, missing = ev.stand_in(options, folder)
            arm.missing_data(missing)
        budget = ev.tiny(run_options) if ev.tiny else run_options
        changed = {k: v for k, v in budget.model_dump().items() if options.model_dump().get(k) != v}
        result = ev(agent, config, budget)
    except Exception as e:  # noqa: BLE001
        arm.fail(label, e)
        return
    scored = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()) or f"not scored ({result.protocol.get('reason', '-')})"
    budget_text = (f"on a tiny budget ({', '.join(f'{k}={v}' for k, v in changed.items()) or 'the tier options'})"
                   if ev.tiny else "on the tier's own budget (the evaluator declares no `tiny` hook)")
    arm.say(f"{label} ran {budget_text} in {time.perf_counter() - t0:.1f}s: {scored}")


def _summary(paper: str, tier: str, reports: list[_Arm]) -> int:
    failures = [f"{a.name}: {f}" for a in reports for f in a.failures]
    missing = sorted({m for a in reports for m in a.missing})
    if failures:
        print(f"dry run of {paper}/{tier}: FAILED ({len(failures)}):\n  " + "\n  ".join(failures), file=sys.stderr)
        return FAILED
    if missing:
        print(f"dry run of {paper}/{tier}: code fine, data missing (exit {DATA_MISSING}); every arm ran on stand-ins "
              f"for:\n  " + "\n  ".join(missing))
        return DATA_MISSING
    print(f"dry run of {paper}/{tier}: ready")
    return READY
