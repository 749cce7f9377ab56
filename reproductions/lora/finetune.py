"""Pre-train the project's GPT on one part of the code corpus, then adapt it to a held-out part:
full fine-tuning (eq. 1) against LoRA (eqs. 2-3, `lora.py`) at ranks r, scored by the held-out
part's validation loss (`lm_loss`) and by merging (`lora_merge`).

The corpus split (`evals/tasks/code_domains.py`): pre-training reads the train files of every
package but the GUI ones (`!idlelib,tkinter,turtledemo`); fine-tuning reads the train files of
those GUI packages, never seen in pre-training; the score is on their validation files. The GPT
is `reproductions/transformer` (built by its `lm.build`, pre-trained with its AdamW, warm-up and
cosine schedule); LoRA replaces its `w_q` and `w_v` projections after pre-training (§4.2).

Pre-training depends on the seed and the pre-training fields of the config alone, so it is done
once per seed and process and reused by every arm run there (`pretrained`, through
`reproductions/common/trained_once.py`): it runs inside its own random state, so an arm gives
the same numbers whether the pre-trained weights come from the cache or are trained afresh (what a
lone re-execution does).
Its curve is logged by every arm (steps 1..steps); fine-tuning is logged at steps after it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from evals.tasks import code_corpus, code_domains
from reproductions.common.trained_once import trained_once
from reproductions.common.training import restore, snapshot
from reproductions.lora import lora
from reproductions.transformer import lm
from reproductions.transformer.gpt import GPT

GUI = "idlelib,tkinter,turtledemo"
METHODS = ("full", "lora", "none")


@dataclass
class Config(lm.Config):
    """`lm.Config`'s fields (model, tokenizer and the *pre-training* schedule: steps, lr, ...) and
    the adaptation's. Defaults are the mini tier's."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    val_percent: int = 25                 # a quarter of the files held out (the GUI part's validation: 184 KB)
    steps: int = 1000                     # pre-training steps (lm.Config's schedule fields)
    batch_size: int = 16
    pretrain_domain: str = "!" + GUI      # every package but the GUI ones
    ft_domain: str = GUI                  # the held-out part adapted to and scored on
    method: str = "lora"                  # full (eq. 1) | lora (eq. 2-3) | none (the pre-trained model as is)
    rank: int = 4                         # r
    alpha: float = 8.0                    # alpha: scaling alpha / r (§4.1)
    targets: str = "w_q,w_v"              # the adapted projections (§4.2: W_q, W_v)
    lora_dropout: float = 0.0
    ft_steps: int = 200
    ft_batch_size: int = 16
    ft_lr: float = 2e-3
    ft_min_lr: float = 2e-4
    ft_warmup_steps: int = 20
    ft_weight_decay: float = 0.01         # Appendix D: AdamW, weight decay 0.01


class FineTunedLM(lm.LanguageModel):
    """The adapted GPT with its tokenizer (a `LanguageModel`), scored on the held-out part
    (`ScoredOnDomain`), and a `MergeableAdapter`: for full fine-tuning and the pre-trained model,
    merging does nothing and the plain model is the model itself."""

    def __init__(self, gpt: GPT, cfg: Config):
        super().__init__(gpt, cfg)
        self.corpus_domain = cfg.ft_domain
        self.method = cfg.method

    def trainable_parameters(self) -> int:
        if self.method == "none":
            return 0
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def base_parameters(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not self.is_adapter(n))

    @staticmethod
    def is_adapter(name: str) -> bool:
        return name.rpartition(".")[2] in ("lora_A", "lora_B")

    def merge(self) -> None:
        lora.merge(self.gpt)

    def unmerge(self) -> None:
        lora.unmerge(self.gpt)

    def plain(self) -> nn.Module:
        return lora.merged_copy(self.gpt)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def targets(cfg: Config) -> list[str]:
    return [t.strip() for t in cfg.targets.split(",") if t.strip()]


def adapt_ours(gpt: GPT, cfg: Config, generator: torch.Generator) -> None:
    lora.inject(gpt, cfg.rank, cfg.alpha, targets(cfg), cfg.lora_dropout, generator)


Adapt = Callable[[GPT, Config, torch.Generator], None]


def build(cfg: Config, adapt: Adapt = adapt_ours, model_class: type[FineTunedLM] = FineTunedLM) -> FineTunedLM:
    if cfg.method not in METHODS:
        raise ValueError(f"config field 'method': {cfg.method!r} is not one of {METHODS}")
    model = model_class(lm.build(cfg).gpt, cfg)
    if cfg.method == "lora":
        adapt(model.gpt, cfg, torch.Generator().manual_seed(0))
    return model


# -- pre-training, once per seed and process ---------------------------------------------------
PRETRAIN_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "ffn_hidden", "dropout", "position", "attention",
                   "tokenizer", "bpe_vocab_size", "val_percent", "steps", "batch_size", "lr", "min_lr",
                   "warmup_steps", "weight_decay", "beta2", "grad_clip", "log_every", "pretrain_domain")


def pretrained(cfg: Config, seed: int, device: torch.device, log: Callable[..., None]) -> dict[str, torch.Tensor]:
    """The GPT's weights after `cfg.steps` steps on the pre-training part (lm's AdamW and
    schedule), its curve passed to `log(step, **values)`; trained once per (pre-training fields,
    seed, device) in a random state of its own (`trained_once`), so the caller's is untouched and
    a cached result is the same bits."""
    key = ("lora pretrain", tuple(getattr(cfg, f) for f in PRETRAIN_FIELDS))
    return trained_once(key, seed, device, lambda record: _pretrain(cfg, seed, device, record), log)


def _pretrain(cfg: Config, seed: int, device: torch.device, log: Callable[..., None]) -> dict[str, torch.Tensor]:
    data = code_domains.token_split("train", cfg.pretrain_domain, cfg.tokenizer, cfg.bpe_vocab_size, cfg.val_percent)
    model = lm.build(cfg).to(device)
    opt = lm.optimizer(model, cfg)
    batches = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lm.lr_at(step, cfg)
        x, y = code_corpus.random_batch(data.tokens, cfg.batch_size, cfg.block_size, batches)
        _, loss = model(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log(step + 1, pretrain_loss=loss.item())
    return {k: v.detach().clone() for k, v in model.gpt.state_dict().items()}


# -- adaptation --------------------------------------------------------------------------------
def ft_schedule(cfg: Config) -> Config:
    """The fine-tuning schedule in lm's field names (for `lm.lr_at`)."""
    return dataclasses.replace(cfg, steps=cfg.ft_steps, lr=cfg.ft_lr, min_lr=cfg.ft_min_lr,
                               warmup_steps=cfg.ft_warmup_steps, weight_decay=cfg.ft_weight_decay)


def train(cfg: Config, run, adapt: Adapt = adapt_ours, model_class: type[FineTunedLM] = FineTunedLM) -> FineTunedLM:
    """Pre-train (or take the cached weights), then adapt on the held-out part for `ft_steps`."""
    device = run.device
    resumed = run.resume_state()
    log = (lambda step, **values: None) if resumed is not None else run.log  # a resumed run has the curve
    state = pretrained(cfg, run.seed, device, log)

    # ALGO LOGIC: eq. (1) trains every weight; eqs. (2-3) only A and B of the adapted projections
    if cfg.method not in METHODS:
        raise ValueError(f"config field 'method': {cfg.method!r} is not one of {METHODS}")
    gpt = lm.build(cfg).gpt
    gpt.load_state_dict(state)
    if cfg.method == "lora":  # around the pre-trained weights: A drawn from the run's seed, B = 0
        adapt(gpt, cfg, torch.Generator().manual_seed(run.seed))
    model = model_class(gpt, cfg).to(device)

    sched = ft_schedule(cfg)
    data = code_domains.token_split("train", cfg.ft_domain, cfg.tokenizer, cfg.bpe_vocab_size, cfg.val_percent)
    batches = torch.Generator().manual_seed(run.seed + 1)
    opt = lm.optimizer(model, sched) if cfg.method != "none" else None
    parts = {"model": model, "batches": batches} | ({"opt": opt} if opt is not None else {})
    step = 0
    if resumed is not None:
        step = restore(resumed, parts)["step"]
    run.progress(cfg.ft_steps)
    model.train()
    while cfg.method != "none" and step < cfg.ft_steps:
        for group in opt.param_groups:
            group["lr"] = lm.lr_at(step, sched)
        x, y = code_corpus.random_batch(data.tokens, cfg.ft_batch_size, cfg.block_size, batches)
        _, loss = model(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        opt.step()
        step += 1
        # TRY NOT TO MODIFY: the run context's services
        if step % cfg.log_every == 0 or step == cfg.ft_steps:
            run.log(cfg.steps + step, train_loss=loss.item(), grad_norm=grad_norm.item(), lr=lm.lr_at(step - 1, sched))
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    model.eval()
    return model


def data_fingerprint(cfg: Config) -> str:
    return (f"pre-training: {code_domains.fingerprint(cfg.pretrain_domain, cfg.val_percent)}; "
            f"adaptation: {code_domains.fingerprint(cfg.ft_domain, cfg.val_percent)}; tokenizer {cfg.tokenizer}")


def dry_run_step(model: FineTunedLM, cfg: Config) -> dict[str, float]:
    """One AdamW step of the adaptation on two random windows of random tokens."""
    x = torch.randint(model.gpt.cfg.vocab_size, (2, min(cfg.block_size, 64)))
    opt = lm.optimizer(model, ft_schedule(cfg))
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    opt.step()
    return {"loss": loss.item(), "trainable_parameters": float(model.trainable_parameters())}


def required_data(cfg: Config) -> list[str]:
    missing = []
    for domain in (cfg.pretrain_domain, cfg.ft_domain):
        try:
            code_domains.load_split("validation", domain, cfg.val_percent)
        except (OSError, FileNotFoundError) as e:
            missing.append(f"the Python standard library's source, part {domain!r}: {e}")
    return missing


def trainable_ratio(cfg: Config) -> float:
    """Full fine-tuning's trainable parameters over LoRA's at this rank (no training needed)."""
    model = build(dataclasses.replace(cfg, method="lora"))
    return model.base_parameters() / model.trainable_parameters()


