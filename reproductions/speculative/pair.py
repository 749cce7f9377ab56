"""The mini tier: a draft GPT and a larger target GPT, both the project's GPT
(`reproductions/transformer/lm.py`, trained by its own loop on the code corpus, byte tokens), then
speculative decoding against the target alone, measured by `measure.py` and scored by the
`speculative_decoding` evaluator.

The two models are trained independently (the paper's drafts are separately trained models of the
same family, Section 4); nothing is distilled. The target's training budget is small: what the
tier tests is the sampler's exactness and the timing, which do not depend on how good the target is,
while alpha does (it is measured, and the formulas are evaluated with the alpha measured).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from evals.contract import SafetensorsModule
from evals.tasks import code_corpus
from reproductions.speculative.decoders import GPTDecoder
from reproductions.speculative.measure import Measurements, measure
from reproductions.transformer import lm


@dataclass
class Config:
    """Both GPTs (the draft much smaller), their training budgets, and what is measured."""

    target_layers: int = 6
    target_heads: int = 4
    target_embd: int = 256
    draft_layers: int = 1
    draft_heads: int = 2
    draft_embd: int = 64
    block_size: int = 256           # training windows and the longest decoded sequence
    target_steps: int = 300
    target_batch: int = 4
    draft_steps: int = 600
    draft_batch: int = 8
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 30
    log_every: int = 25
    # measurement
    gammas: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 6, 8])   # guesses per iteration
    prompts: int = 12               # held-out prompts (validation windows of the code corpus)
    prompt_len: int = 64
    new_tokens: int = 160
    draws: int = 1000               # speculative first tokens per prefix, for the distribution test
    draw_prefixes: int = 4
    draw_gamma: int = 4
    cost_repeats: int = 20          # timed calls per prompt for the step costs


def lm_config(cfg: Config, which: str) -> lm.Config:
    """The transformer paper's LM config of the target or the draft."""
    layers, heads, embd, steps, batch = (
        (cfg.target_layers, cfg.target_heads, cfg.target_embd, cfg.target_steps, cfg.target_batch) if which == "target"
        else (cfg.draft_layers, cfg.draft_heads, cfg.draft_embd, cfg.draft_steps, cfg.draft_batch))
    return lm.Config(n_layer=layers, n_head=heads, n_embd=embd, block_size=cfg.block_size, steps=steps,
                     batch_size=batch, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=min(cfg.warmup_steps, steps),
                     log_every=cfg.log_every)


class SpeculativePair(SafetensorsModule):
    """A target GPT and its draft, and (after `train`) the measurements of decoding with them."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.target = lm.build(lm_config(cfg, "target"))
        self.draft = lm.build(lm_config(cfg, "draft"))
        self.measurements = Measurements()

    def decoders(self) -> tuple[GPTDecoder, GPTDecoder]:
        return GPTDecoder(self.target.gpt.eval()), GPTDecoder(self.draft.gpt.eval())

    def num_parameters(self) -> int:
        return self.target.num_parameters() + self.draft.num_parameters()

    def save(self, path) -> None:
        """Both models' weights (the tied output matrices once), the measurements as metadata."""
        state = {k: v for k, v in self.state_dict().items() if not k.endswith("lm_head.weight")}  # tied to wte
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path),
                  metadata={"measurements": json.dumps(asdict(self.measurements))})

    def load(self, path) -> "SpeculativePair":
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "measurements" in meta:
            self.measurements = Measurements(**json.loads(meta["measurements"]))
        result = self.load_state_dict(load_file(str(path)), strict=False)
        missing = {k for k in result.missing_keys if not k.endswith("lm_head.weight")}
        if missing or result.unexpected_keys:
            raise KeyError(f"{path}: not this pair's checkpoint (missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(result.unexpected_keys)[:5]})")
        return self


for _name in ("gammas", "seconds", "passes", "emitted", "identical", "beta", "draws", "measurement"):
    # the SpeculativeMeasurements capability of evals/contract.py: the raw values, read-only
    setattr(SpeculativePair, _name, property(lambda self, n=_name: getattr(self.measurements, n)))


def build(cfg: Config) -> SpeculativePair:
    if max(cfg.gammas) + cfg.prompt_len + cfg.new_tokens > cfg.block_size:
        raise ValueError(f"prompt_len + new_tokens + max(gammas) = {cfg.prompt_len + cfg.new_tokens + max(cfg.gammas)} "
                         f"exceeds block_size={cfg.block_size}")
    return SpeculativePair(cfg)


class _Prefixed:
    """The run context with a prefix on every logged name (two models trained in one run), and
    neither checkpoints nor resumption (a resumed run trains again from the start)."""

    def __init__(self, run, prefix: str):
        self.run, self.prefix = run, prefix
        self.seed, self.device, self.dir = run.seed, run.device, run.dir

    def log(self, step, **values):
        self.run.log(step, **{f"{self.prefix}_{k}": v for k, v in values.items()})

    def progress(self, total, unit="step"):
        self.run.progress(total, unit)
        return self

    def advance(self, n=1):
        self.run.advance(n)

    def maybe_checkpoint(self, step, state):
        pass

    def resume_state(self):
        return None


def held_out_prompts(cfg: Config, n: int, length: int, seed: int) -> list[list[int]]:
    """`n` windows of `length` byte tokens from the validation split, at random starts."""
    tokens = code_corpus.token_split("validation", "bytes").tokens
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(len(tokens) - length, (n,), generator=gen).tolist()
    return [tokens[s:s + length].long().tolist() for s in starts]


def train(cfg: Config, run) -> SpeculativePair:
    pair = build(cfg)
    # the two models, each by the transformer paper's training loop, the target first
    lm.train(lm_config(cfg, "target"), _Prefixed(run, "target"), model=pair.target)
    lm.train(lm_config(cfg, "draft"), _Prefixed(run, "draft"), model=pair.draft)
    pair = pair.cpu()
    target, draft = pair.decoders()
    prompts = held_out_prompts(cfg, cfg.prompts, cfg.prompt_len, run.seed)
    prefixes = held_out_prompts(cfg, cfg.draw_prefixes, cfg.prompt_len // 2, run.seed + 10_000)
    run.progress(cfg.prompts + cfg.draw_prefixes, unit="prompt")
    pair.measurements = measure(target, draft, prompts, prefixes, gammas=cfg.gammas, new_tokens=cfg.new_tokens,
                                draws=cfg.draws, draw_gamma=cfg.draw_gamma, cost_repeats=cfg.cost_repeats,
                                seed=run.seed, progress=run.advance)
    plot(pair.measurements, Path(run.dir) / "speedup_vs_gamma.png")
    return pair


def plot(m: Measurements, path: Path) -> None:
    """Measured wall-time speed-up against gamma (greedy and sampled), beside Theorem 3.8 with the
    measured alpha and c, uncorrected (verification costs one step) and corrected (its measured cost)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reproductions.speculative.speculative import walltime_speedup

    def mean(xs):
        return sum(xs) / len(xs)

    c = mean(m.seconds["draft_step"]) / mean(m.seconds["target_step"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, colour in (("greedy", "C0"), ("sampled", "C1")):
        alpha = mean(m.beta[mode])
        measured = [sum(m.seconds[f"target_{mode}"]) / sum(m.seconds[f"speculative_{mode}_g{g}"]) for g in m.gammas]
        paper = [walltime_speedup(alpha, g, c) for g in m.gammas]
        corrected = [walltime_speedup(alpha, g, c, mean(m.seconds[f"verify_g{g}"]) / mean(m.seconds["target_step"]))
                     for g in m.gammas]
        ax.plot(m.gammas, measured, "o-", color=colour, label=f"{mode}: measured (alpha {alpha:.2f})")
        ax.plot(m.gammas, corrected, "s--", color=colour, alpha=0.7, label=f"{mode}: Thm 3.8, measured verify cost")
        ax.plot(m.gammas, paper, ":", color=colour, alpha=0.7, label=f"{mode}: Thm 3.8 (verify = 1 step)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="gamma (draft guesses per iteration)", ylabel="wall-time speed-up vs target alone",
           title=f"Speculative decoding, batch 1, CPU (c = {c:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def data_fingerprint(cfg: Config) -> str:
    return code_corpus.fingerprint(10) + ", tokenizer bytes"


def required_data(cfg: Config) -> list[str]:
    return lm.required_data(lm_config(cfg, "target"))


def dry_run_step(pair: SpeculativePair, cfg: Config) -> dict[str, float]:
    """One optimisation step of each model on random tokens."""
    out = lm.dry_run_step(pair.target, lm_config(cfg, "target"))
    return {"target_loss": out["loss"], "draft_loss": lm.dry_run_step(pair.draft, lm_config(cfg, "draft"))["loss"]}
