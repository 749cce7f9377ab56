"""The paper's experiment: train the encoder-decoder on a translation task and translate held-out
sentences with beam search (the paper module of `reproductions.transformer`).

Datasets: `generated` (mini and smoke tiers: `translation_data.py`, word-level vocabulary) or
`wmt14` (the full tier: WMT14 EN-DE as saved by the `datasets` library's `save_to_disk`, from a
local path, with a shared byte-level BPE vocabulary trained on its training text, §5.1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from reproductions.common.training import restore, snapshot
from reproductions.transformer import translation_data
from reproductions.transformer.encdec import BOS, EOS, PAD, Transformer, beam_search, label_smoothed_nll, noam_lr

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


@dataclass
class Config:
    """Defaults are the paper's base model (Table 3, row 'base')."""

    dataset: str = "generated"          # generated | wmt14
    data_dir: str = ""                  # wmt14: a `datasets` save_to_disk folder with train and test splits
    source_lang: str = "en"
    target_lang: str = "de"
    vocab_size: int = 37_000            # wmt14: shared BPE vocabulary (§5.1)
    train_sentences: int = 40_000       # generated: pairs drawn from the run's seed
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    positional: str = "sinusoidal"      # sinusoidal | none (the ablation)
    label_smoothing: float = 0.1
    warmup_steps: int = 4000
    lr_factor: float = 1.0
    steps: int = 100_000
    batch_size: int = 64                # sentence pairs per step
    beam_size: int = 4
    length_alpha: float = 0.6
    max_len_offset: int = 50
    test_sentences: int = 500           # generated: held-out pairs translated by the evaluator
    log_every: int = 50


# -- vocabularies ------------------------------------------------------------------------------
class WordVocab:
    """Whitespace words of the generated languages, one id each, after the special tokens."""

    def __init__(self, words: list[str]):
        self.itos = SPECIALS + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, 3) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.itos[i] for i in ids if i >= len(SPECIALS))


class BPEVocab:
    """A shared byte-level BPE over both languages' training text (`tokenizers`)."""

    def __init__(self, texts, vocab_size: int):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                           show_progress=False))
        self._tok = tok

    def __len__(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True).strip()


@lru_cache(maxsize=2)
def load_wmt14(data_dir: str, source_lang: str, target_lang: str) -> dict[str, list[tuple[str, str]]]:
    """`train` and `test` (newstest2014) pairs from a `datasets` folder whose rows hold
    `translation: {source_lang: ..., target_lang: ...}` (the layout of the standard wmt14 set)."""
    from datasets import load_from_disk

    ds = load_from_disk(data_dir)
    return {split: [(row["translation"][source_lang], row["translation"][target_lang]) for row in ds[split]]
            for split in ("train", "test")}


# -- the trained thing -------------------------------------------------------------------------
class Translator(torch.nn.Module):
    """The Transformer with its vocabulary: `translate(sentences)` by beam search."""

    def __init__(self, cfg: Config, vocab, pairs: dict[str, list[tuple[str, str]]]):
        super().__init__()
        self.cfg, self.vocab, self.pairs = cfg, vocab, pairs
        self.model = Transformer(len(vocab), cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.d_ff, cfg.dropout,
                                 cfg.positional)

    def held_out(self) -> list[tuple[str, str]]:
        """The evaluation pairs (source, reference)."""
        return self.pairs["test"]

    @torch.no_grad()
    def translate(self, sentences: list[str]) -> list[str]:
        self.model.eval()
        device = self.model.embedding.weight.device
        out = []
        for s in sentences:
            src = torch.tensor([self.vocab.encode(s) + [EOS]], device=device)
            out.append(self.vocab.decode(beam_search(self.model, src, self.cfg.beam_size, self.cfg.length_alpha,
                                                     self.cfg.max_len_offset)))
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def save(self, path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(path))

    def load(self, path) -> "Translator":
        self.model.load_state_dict(load_file(str(path)))
        return self


def build(cfg: Config, seed: int = 0) -> Translator:
    """The untrained translator; the generated training pairs are drawn from `seed`."""
    if cfg.dataset == "generated":
        pairs = {"train": translation_data.pairs(seed, cfg.train_sentences),
                 "test": translation_data.test_pairs(cfg.test_sentences)}
        return Translator(cfg, WordVocab(translation_data.vocabulary()), pairs)
    if cfg.dataset == "wmt14":
        pairs = load_wmt14(cfg.data_dir, cfg.source_lang, cfg.target_lang)
        return Translator(cfg, BPEVocab((t for pair in pairs["train"] for t in pair), cfg.vocab_size), pairs)
    raise ValueError(f"config field 'dataset': {cfg.dataset!r} is not 'generated' or 'wmt14'")


def encode_pairs(pairs, vocab) -> tuple[list[list[int]], list[list[int]]]:
    return [vocab.encode(s) + [EOS] for s, _ in pairs], [[BOS] + vocab.encode(t) + [EOS] for _, t in pairs]


def pad(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(map(len, seqs))), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out


def train_step(translator: Translator, opt, src, tgt, cfg: Config) -> torch.Tensor:
    """One step on a padded batch: teacher forcing, label-smoothed loss, Adam."""
    logits = translator.model(src, tgt[:, :-1])
    loss = label_smoothed_nll(logits, tgt[:, 1:], cfg.label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def train(cfg: Config, run) -> Translator:
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


def data_fingerprint(cfg: Config) -> str:
    if cfg.dataset == "generated":
        return translation_data.fingerprint()
    h = hashlib.sha256()
    for f in sorted(Path(cfg.data_dir).rglob("*")):
        if f.is_file():
            h.update(f.relative_to(cfg.data_dir).as_posix().encode() + f.read_bytes())
    return f"wmt14 {cfg.source_lang}-{cfg.target_lang} at {cfg.data_dir} sha256:{h.hexdigest()[:16]}"


def dry_run_step(translator: Translator, cfg: Config) -> dict[str, float]:
    """One Adam step on two random sentence pairs of random tokens."""
    vocab = translator.model.embedding.num_embeddings
    src = torch.randint(4, vocab, (2, 12))
    tgt = torch.cat([torch.full((2, 1), BOS), torch.randint(4, vocab, (2, 12)), torch.full((2, 1), EOS)], dim=1)
    opt = torch.optim.Adam(translator.model.parameters(), lr=noam_lr(1, cfg.d_model, cfg.warmup_steps), betas=(0.9, 0.98), eps=1e-9)
    return {"loss": train_step(translator, opt, src, tgt, cfg).item()}


def required_data(cfg: Config) -> list[str]:
    if cfg.dataset != "wmt14":
        return []
    path = Path(cfg.data_dir) if cfg.data_dir else None
    if path is None or not (path / "dataset_dict.json").is_file():
        return [f"WMT14 {cfg.source_lang}-{cfg.target_lang} as a `datasets` save_to_disk folder at data_dir="
                f"{cfg.data_dir!r} (with train and test splits; e.g. `load_dataset('wmt14', 'de-en').save_to_disk(...)` "
                "on a machine with network access)"]
    return []
