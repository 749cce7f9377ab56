"""`repro reproduce --tier full --dry-run` (evals/dry_run.py): every full tier's dry run passes on
this CPU machine, evaluators included, on stand-ins where its data is absent; a tier setting that
cannot work is caught; the exit status tells ready from data missing from failed."""

from __future__ import annotations

import importlib
import math
import re

import pytest
from pydantic import BaseModel

from evals import dry_run as dr
from evals.cli import main
from evals.contract import paper_hooks
from evals.evaluators import EvaluatorSpec, resolve_evaluator, shrunk
from evals.evaluators.lm_loss import LMLossOptions
from evals.spec import load_spec, readable_specs
from evals.tasks import code_corpus
from evals.tasks.image_loaders import image_dataset, missing_data
from evals.tasks.stand_ins import write_cifar10, write_imagenet


def _full_tiers() -> list[str]:
    return [s.id for s in readable_specs()[0] if "full" in s.tiers]


# What `make test` shortens (the CLI's dry run does it all):
# - DDPM samples through its whole chain of T = 1000 U-Net passes, minutes on a CPU: the test
#   shortens the chain (the sampler's and the evaluator's code paths do not depend on its length);
# - BitNet's six arms are three widths of the same two models: the 350M and 760M pairs take 8 of
#   the tier's 8.5 minutes and 9 GB on a CPU core, so the test dry-runs the 125M pair.
SHORTER = {"ddpm": ["--set", "T=2"], "bitnet": ["--arms", "bitnet_125M,fp_125M"]}


@pytest.mark.parametrize("paper", _full_tiers())
def test_every_full_tier_dry_runs_with_its_evaluators(paper, capsys):
    code = main(["reproduce", paper, "--tier", "full", "--dry-run", *SHORTER.get(paper, [])])
    out, err = capsys.readouterr()
    assert code in (dr.READY, dr.DATA_MISSING), f"exit {code}:\n{err[-3000:]}"
    if code == dr.DATA_MISSING:
        assert f"dry run of {paper}/full: code fine, data missing" in out and "missing: " in err
    else:
        assert f"dry run of {paper}/full: ready" in out
    tier = load_spec(paper).tiers["full"]
    extra = SHORTER.get(paper, [])
    arms = extra[extra.index("--arms") + 1].split(",") if "--arms" in extra else list(tier.arms)
    ran = [line for line in out.splitlines() if re.match(r"\[[^\]]+\] evaluator \S+ ran on ", line)]
    assert len(ran) == len(arms) * len(tier.evaluators)  # each evaluator ran on each arm


def test_exit_codes_are_distinct_and_documented():
    codes = {dr.READY, dr.FAILED, dr.INVALID, dr.DATA_MISSING}
    assert len(codes) == 4 and dr.READY == 0
    for code, meaning in dr.EXIT_CODES.items():
        assert f"  {code}  {meaning}" in dr.__doc__


def test_a_tier_setting_that_cannot_work_fails_the_dry_run(monkeypatch, capsys):
    """lm_loss asked for more tokens than the validation split holds: exit 1, and the report says
    how many fit (the count checked against the split itself)."""
    import evals.tier_runner as tr

    split = code_corpus.token_split("validation", "bytes", 1024, 10)
    too_many = len(split.tokens) + 4096
    bad = [resolve_evaluator(EvaluatorSpec(kind="lm_loss", tokens=too_many, batch_size=8), "test")]
    monkeypatch.setattr(tr, "evaluators_for", lambda paper, tier: bad)
    assert dr.dry_run("rope", "smoke", arms=["rope"]) == dr.FAILED
    err = capsys.readouterr().err
    fits = (len(split.tokens) - 1) // 32 * 32  # the smoke tier's block of 32 tokens
    assert f"tokens={too_many:,}" in err and f"at most {fits:,} fit" in err
    # the same tier with its own options is ready (the corpus is on every machine)
    monkeypatch.undo()
    assert dr.dry_run("rope", "smoke", arms=["rope"]) == dr.READY


def test_lm_loss_check_agrees_with_the_loader():
    """`check` says a budget fits exactly when `fixed_windows` can serve it."""
    from evals.evaluators.lm_loss import check
    from reproductions.transformer import lm

    cfg = lm.Config(n_layer=1, n_head=1, n_embd=8, block_size=64)
    model = lm.build(cfg)
    n = len(code_corpus.token_split("validation", "bytes", 1024, 10).tokens)
    for tokens in (64, (n - 1) // 64 * 64, (n - 1) // 64 * 64 + 64):
        fits = not check(model, cfg, LMLossOptions(tokens=tokens))
        try:
            list(code_corpus.fixed_windows(code_corpus.token_split("validation").tokens, tokens, 64, 1024))
            served = True
        except ValueError:
            served = False
        assert fits == served, tokens
    assert not check(object(), cfg, LMLossOptions(tokens=10**12))  # not a language model: not scored, no problem


def test_shrunk_caps_a_budget_and_keeps_a_smaller_one():
    class Opts(BaseModel):
        episodes: int = 10
        n: int = 0          # 0: all
        limit: int | None = None
        other: str = "x"

    assert shrunk(Opts(), episodes=1, n=4, limit=2) == Opts(episodes=1, n=4, limit=2)
    assert shrunk(Opts(episodes=1, n=2, limit=1), episodes=3, n=4, limit=2) == Opts(episodes=1, n=2, limit=1)


def test_every_registered_evaluator_with_a_budget_shrinks_it():
    from evals.evaluators import REGISTRY, _load_builtin

    _load_builtin()
    budgets = {"rl_return": {}, "atari_return": {}, "classification": {"n": 0}, "bleu": {},
               "lm_loss": {}, "lm_eval": {"tasks": ["repro_python_mc"]}, "fid": {"num_samples": 50000}}
    for name, options in budgets.items():
        ev = REGISTRY[name]
        full = ev.options.model_validate(options)
        tiny = ev.tiny(full)
        assert tiny != full and type(tiny) is type(full), name


def test_options_follow_a_path_the_stand_in_moved():
    class Opts(BaseModel):
        data_root: str | None = "data/cifar10"
        dataset: str = "cifar10"

    moved = {"data/cifar10": "/tmp/x/cifar10"}
    assert dr.follow(Opts(), moved) == Opts(data_root="/tmp/x/cifar10")
    assert dr.follow(Opts(data_root=None), moved) == Opts(data_root=None)


def test_stand_in_hooks_are_found_beside_the_module():
    """A paper's `stand_ins` module is the dry run's alone: the hook is found there, and the run's
    source files (the records' hash) do not include it."""
    from evals import provenance

    for module in ("reproductions.vit", "reproductions.mae", "reproductions.transformer", "reproductions.ddpm",
                   "reproductions.mixtral.checkpoint"):
        hooks = paper_hooks(importlib.import_module(module))
        assert hooks.stand_in_data is not None, module
        assert not any(f.endswith("stand_ins.py") for f in provenance.source_files(module)), module
    assert paper_hooks(importlib.import_module("reproductions.sac")).stand_in_data is None


def test_image_stand_ins_are_read_by_the_real_loaders(tmp_path):
    root = write_imagenet(tmp_path / "imagenet")
    assert missing_data("imagenet", root) == []
    val = image_dataset("imagenet", "val", 32, root)
    assert len(val) == 4 and sorted({y for _, y in val}) == [0, 1] and val[0][0].shape == (3, 32, 32)
    root = write_cifar10(tmp_path / "cifar10")
    test = image_dataset("cifar10", "test", 32, root)
    assert len(test) == 20 and len(image_dataset("cifar10", "train", 32, root)) == 20
    x = test[0][0]
    assert x.shape == (3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0 and math.isfinite(x.sum().item())


def test_missing_data_without_a_stand_in_is_invalid(capsys):
    code = main(["reproduce", "sac", "--tier", "full", "--dry-run", "--arms", "ours", "--set", "env_id=NoSuchEnv-v0"])
    assert code == dr.INVALID and "no stand_in_data hook" in capsys.readouterr().err


def test_reproduce_refuses_up_front_when_data_is_missing(tmp_path, monkeypatch, capsys):
    """A real run (not the dry run) whose arm lacks its data starts nothing: exit 3, the missing
    item named per arm, no record or run folder written (LoRA's GUI packages absent, as on a
    distribution that ships tkinter and idlelib apart)."""
    from evals.tasks import code_domains

    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    real = code_domains.load_split

    def without_gui(split, domain="", val_percent=10, root=None):
        if domain == "idlelib,tkinter,turtledemo":
            raise FileNotFoundError(f"/usr/lib/python3.12: no corpus file in domain {domain!r}")
        return real(split, domain, val_percent, root)

    monkeypatch.setattr(code_domains, "load_split", without_gui)
    code = main(["reproduce", "lora", "--tier", "smoke", "--arms", "lora_r2,full_ft", "--no-progress"])
    err = capsys.readouterr().err
    assert code == dr.DATA_MISSING
    assert "no run started, data missing" in err
    assert "lora/smoke arm lora_r2: " in err and "lora/smoke arm full_ft: " in err and "idlelib,tkinter" in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()
