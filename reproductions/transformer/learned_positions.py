"""Table 3, row (E) of "Attention Is All You Need": learned positional embeddings instead of the
sinusoids (§3.5: "We also experimented with using learned positional embeddings [9] instead, and
found that the two versions produced nearly identical results").

`LearnedPositionTransformer` is `encdec.Transformer` whose input adds a trained table
`pos_embedding[position]` (one d_model vector per position, as in ConvS2S [9]) in place of the
fixed sinusoids; everything else (layers, shared embeddings scaled by sqrt(d_model), dropout,
beam search, loss, schedule, data) is the base model's, imported from `encdec` and
`translation`. The table is drawn after the base model's own weights, so for a given seed every
other weight starts exactly as the sinusoidal model's does: the two arms differ in the positions
alone. The table starts as N(0, d_model^-0.5), fairseq's initialisation of learned positions
(the scale of the token embeddings before their sqrt(d_model) factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from reproductions.common.training import restore, snapshot
from reproductions.transformer import translation, translation_data
from reproductions.transformer.encdec import Transformer, noam_lr
from reproductions.transformer.translation import (BPEVocab, WordVocab, data_fingerprint, dry_run_step, encode_pairs,
                                                   load_wmt14, pad, required_data, train_step)

__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data",
           "LearnedPositionTransformer"]


@dataclass
class Config(translation.Config):
    """The base model's config, with learned positions (Table 3, row E)."""

    positional: str = "learned"         # the only value this module builds
    max_positions: int = 256            # rows of the learned table: the longest input or output it can read


class LearnedPositionTransformer(Transformer):
    """The encoder-decoder with a learned positional table added to the scaled token embeddings."""

    def __init__(self, vocab_size: int, d_model: int = 512, n_heads: int = 8, n_layers: int = 6, d_ff: int = 2048,
                 dropout: float = 0.1, max_positions: int = 256):
        # positional="none" adds a zero buffer; the learned table below takes its place.
        super().__init__(vocab_size, d_model, n_heads, n_layers, d_ff, dropout, "none", max_positions)
        del self.pe
        self.pos_embedding = nn.Embedding(max_positions, d_model)
        nn.init.normal_(self.pos_embedding.weight, mean=0.0, std=d_model ** -0.5)

    def _embed(self, tokens):
        n = tokens.size(1)
        if n > self.pos_embedding.num_embeddings:
            raise ValueError(f"a sequence of {n} tokens is longer than the learned table's "
                             f"{self.pos_embedding.num_embeddings} positions (config max_positions)")
        return self.dropout(self.embedding(tokens) * math.sqrt(self.d_model) + self.pos_embedding.weight[:n])


class Translator(translation.Translator):
    """`translation.Translator` around the learned-position model."""

    def __init__(self, cfg: Config, vocab, pairs: dict[str, list[tuple[str, str]]]):
        nn.Module.__init__(self)  # not the parent's: it would build (and draw) a sinusoidal model first
        self.cfg, self.vocab, self.pairs = cfg, vocab, pairs
        self.model = LearnedPositionTransformer(len(vocab), cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.d_ff,
                                                cfg.dropout, cfg.max_positions)


def build(cfg: Config, seed: int = 0) -> Translator:
    """The untrained translator, on the same data as `translation.build`."""
    if cfg.positional != "learned":
        raise ValueError(f"config field 'positional': {cfg.positional!r}; this module builds 'learned' positions "
                         "(the sinusoidal model and the ablation are reproductions.transformer.translation)")
    if cfg.dataset == "generated":
        pairs = {"train": translation_data.pairs(seed, cfg.train_sentences),
                 "test": translation_data.test_pairs(cfg.test_sentences)}
        return Translator(cfg, WordVocab(translation_data.vocabulary()), pairs)
    if cfg.dataset == "wmt14":
        pairs = load_wmt14(cfg.data_dir, cfg.source_lang, cfg.target_lang)
        return Translator(cfg, BPEVocab((t for pair in pairs["train"] for t in pair), cfg.vocab_size), pairs)
    raise ValueError(f"config field 'dataset': {cfg.dataset!r} is not 'generated' or 'wmt14'")


def train(cfg: Config, run) -> Translator:
    """`translation.train`'s loop (same batches, schedule, loss and checkpoints) on this module's model."""
    translator = build(cfg, run.seed)
    sources, targets = encode_pairs(translator.pairs["train"], translator.vocab)
    translator.to(run.device)
    opt = torch.optim.Adam(translator.model.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9)  # §5.3
    batches = torch.Generator().manual_seed(run.seed)
    parts = {"model": translator.model, "opt": opt, "batches": batches}
    step = 0
    resumed = run.resume_state()
    if resumed is not None:
        step = restore(resumed, parts)["step"]
    run.progress(cfg.steps)
    translator.model.train()
    while step < cfg.steps:
        step += 1
        for group in opt.param_groups:
            group["lr"] = noam_lr(step, cfg.d_model, cfg.warmup_steps, cfg.lr_factor)
        idx = torch.randint(len(sources), (cfg.batch_size,), generator=batches).tolist()
        src, tgt = pad([sources[i] for i in idx]).to(run.device), pad([targets[i] for i in idx]).to(run.device)
        loss = train_step(translator, opt, src, tgt, cfg)
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, train_loss=loss.item(), lr=opt.param_groups[0]["lr"])
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    translator.model.eval()
    return translator
