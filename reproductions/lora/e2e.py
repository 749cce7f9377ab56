"""The paper's own setting (Table 3): GPT-2 Medium adapted with LoRA to the E2E NLG Challenge,
scored by multi-reference BLEU on the test set.

- model: the project's GPT (`reproductions/transformer/gpt.py`) in GPT-2 Medium's shape (24
  layers, d 1024, 16 heads, biases, tanh-GELU through the `ffn` extension point), holding the
  published GPT-2 Medium weights converted from a local Hugging Face folder (`model_dir`:
  config.json, model.safetensors, tokenizer.json); LoRA (`lora.py`) on W_q and W_v;
- data: the authors' E2E files (`data_root`: train.txt, valid.txt, test.txt, one
  `meaning representation||reference` per line, as microsoft/LoRA's examples/NLG/data/e2e);
  a training sequence is `MR ||` then ` reference<|endoftext|>`, the loss on the reference alone;
- training (Appendix D.3, Table 11): AdamW, weight decay 0.01, dropout 0.1, batch 8, 5 epochs,
  warm-up 500 steps then a linear decay, label smoothing 0.1, lr 2e-4, r = 4, alpha = 32;
- decoding (Table 11): beam search, beam 10, length penalty 0.9, no repeated 4-gram;
- score: BLEU over the test set's distinct meaning representations, each against all its
  references (`nlg_bleu`, sacrebleu).

Everything here reads only local files: a missing folder or file is named by `required_data`
with what to put there. `stand_ins.py` writes a tiny stand-in of both for `--dry-run`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.contract import SafetensorsModule
from reproductions.common.training import restore, snapshot
from reproductions.lora import lora
from reproductions.transformer import lm
from reproductions.transformer.gpt import GPT
from reproductions.transformer.gpt2_weights import load_gpt2

EOS = "<|endoftext|>"
SEPARATOR = " ||"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
DATA_FILES = ("train.txt", "valid.txt", "test.txt")


@dataclass
class Config:
    """Table 11's GPT-2 Medium E2E column; the folders are local."""

    model_dir: str = "data/gpt2-medium"   # Hugging Face 'gpt2-medium' files: config.json, model.safetensors, tokenizer.json
    data_root: str = "data/e2e"           # train.txt, valid.txt, test.txt ('MR||reference' per line)
    method: str = "lora"                  # lora | full
    rank: int = 4                         # r_q = r_v = 4
    alpha: float = 32.0                   # LoRA alpha
    targets: str = "w_q,w_v"
    lora_dropout: float = 0.1
    dropout: float = 0.1                  # the GPT's residual and embedding dropout
    epochs: int = 5
    max_steps: int = 0                    # > 0: stop there (0: the epochs decide)
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    label_smoothing: float = 0.1
    max_len: int = 512
    beam_size: int = 10
    length_penalty: float = 0.9
    no_repeat_ngram: int = 4
    max_new_tokens: int = 64
    log_every: int = 100


# -- GPT-2's tokenizer --------------------------------------------------------------------------
def tokenizer(model_dir: str | Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))


# -- E2E ---------------------------------------------------------------------------------------
def read_split(data_root: str | Path, split: str) -> list[tuple[str, str]]:
    """(meaning representation, reference) pairs of train / valid / test."""
    path = Path(data_root) / f"{split}.txt"
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            if "||" not in line:
                raise ValueError(f"{path}:{n}: expected 'meaning representation||reference'")
            mr, ref = line.split("||", 1)
            pairs.append((mr.strip(), ref.strip()))
    return pairs


def grouped(pairs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Each distinct meaning representation with all its references, in first-seen order."""
    refs: dict[str, list[str]] = {}
    for mr, ref in pairs:
        refs.setdefault(mr, []).append(ref)
    return list(refs.items())


def encode_example(tok, mr: str, ref: str, max_len: int) -> tuple[list[int], int]:
    """Token ids of `MR ||` + ` ref<|endoftext|>` (cut to max_len) and where the reference starts."""
    prompt = tok.encode(mr + SEPARATOR).ids
    target = tok.encode(" " + ref).ids + [tok.token_to_id(EOS)]
    ids = (prompt + target)[:max_len]
    return ids, min(len(prompt), len(ids))


def collate(examples: list[tuple[list[int], int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (shifted by one), the targets -100 outside the references."""
    width = max(len(ids) for ids, _ in examples) - 1
    x = torch.full((len(examples), width), pad, dtype=torch.long)
    y = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (ids, start) in enumerate(examples):
        t = torch.tensor(ids)
        x[i, : len(ids) - 1] = t[:-1]
        y[i, start - 1: len(ids) - 1] = t[start:]
    return x, y


# -- decoding ----------------------------------------------------------------------------------
def _banned(seq: list[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram of `seq` (no_repeat_ngram_size)."""
    if n <= 0 or len(seq) < n:
        return set()
    prefix = tuple(seq[len(seq) - n + 1:])
    return {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == prefix}


@torch.no_grad()
def beam_search(gpt: GPT, prompt: list[int], eos: int, beam: int = 10, max_new: int = 64, length_penalty: float = 0.9,
                no_repeat_ngram: int = 4) -> list[int]:
    """Beam search over the continuation of `prompt`; a finished hypothesis scores its summed
    log-probability over (length ** length_penalty), as Hugging Face's `generate`. Returns the
    best continuation without its end token."""
    device = next(gpt.parameters()).device
    beams: list[tuple[float, list[int]]] = [(0.0, [])]
    finished: list[tuple[float, list[int]]] = []
    for _ in range(max_new):
        seqs = [prompt + b for _, b in beams]  # every open beam has the same length
        x = torch.tensor(seqs, dtype=torch.long, device=device)[:, -gpt.cfg.block_size:]
        logits = gpt(x)[0][:, -1].float()
        candidates = []
        for i, (score, b) in enumerate(beams):
            logp = torch.log_softmax(logits[i], dim=-1)
            for t in _banned(seqs[i], no_repeat_ngram):
                logp[t] = float("-inf")
            top = torch.topk(logp, beam)
            candidates += [(score + v, b + [t]) for v, t in zip(top.values.tolist(), top.indices.tolist())
                           if v > float("-inf")]
        candidates.sort(key=lambda c: c[0], reverse=True)
        beams = []
        for score, b in candidates:
            if b[-1] == eos:
                finished.append((score / (len(b) ** length_penalty), b[:-1]))
            else:
                beams.append((score, b))
            if len(beams) == beam:
                break
        best_open = max((s / ((len(b) + 1) ** length_penalty) for s, b in beams), default=float("-inf"))
        if len(finished) >= beam and max(f[0] for f in finished) >= best_open:
            break
        if not beams:
            break
    finished += [(s / (len(b) ** length_penalty), b) for s, b in beams]
    return max(finished, key=lambda f: f[0])[1] if finished else []


# -- the agent ---------------------------------------------------------------------------------
class E2EModel(SafetensorsModule):
    """GPT-2 (with LoRA) that writes a sentence for a meaning representation (`DataToText`)."""

    def __init__(self, gpt: GPT, cfg: Config):
        super().__init__()
        self.gpt, self.cfg = gpt, cfg
        self.tok = tokenizer(cfg.model_dir)

    def forward(self, idx, targets=None):
        return self.gpt(idx, targets)

    def held_out_references(self) -> list[tuple[str, list[str]]]:
        return grouped(read_split(self.cfg.data_root, "test"))

    def generate_texts(self, sources: list[str]) -> list[str]:
        was = self.training
        self.eval()
        eos = self.tok.token_to_id(EOS)
        out = []
        for mr in sources:
            ids = beam_search(self.gpt, self.tok.encode(mr + SEPARATOR).ids, eos, self.cfg.beam_size,
                              self.cfg.max_new_tokens, self.cfg.length_penalty, self.cfg.no_repeat_ngram)
            out.append(self.tok.decode(ids).strip())
        self.train(was)
        return out

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # the GPT's weights with the output layer left out (tied to the token embedding), as the LM papers save them
    save = lm.LanguageModel.save
    load = lm.LanguageModel.load


def _adapt(gpt: GPT, cfg: Config, generator: torch.Generator | None = None) -> None:
    if cfg.method == "lora":
        lora.inject(gpt, cfg.rank, cfg.alpha, [t.strip() for t in cfg.targets.split(",")], cfg.lora_dropout, generator)
    elif cfg.method != "full":
        raise ValueError(f"config field 'method': {cfg.method!r} is not one of ('lora', 'full')")


def build(cfg: Config, generator: torch.Generator | None = None) -> E2EModel:
    """GPT-2 Medium's published weights, adapted (`generator` draws A)."""
    missing = required_data(cfg)
    if missing:
        raise FileNotFoundError("; ".join(missing))
    gpt = load_gpt2(cfg.model_dir, cfg.dropout)
    _adapt(gpt, cfg, generator)
    return E2EModel(gpt, cfg)


def lr_at(step: int, total: int, cfg: Config) -> float:
    """Linear warm-up over `warmup_steps`, then linear decay to 0 at `total` (Table 11: 'Linear')."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * max(0.0, (total - step) / max(1, total - cfg.warmup_steps))


def optimizer(model: nn.Module, cfg: Config) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                             weight_decay=cfg.weight_decay)


def loss_of(model: E2EModel, x: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    logits = model(x)[0]
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100, label_smoothing=label_smoothing)


def train(cfg: Config, run) -> E2EModel:
    model = build(cfg, torch.Generator().manual_seed(run.seed)).to(run.device)  # A from the run's seed, B = 0
    tok = model.tok
    examples = [encode_example(tok, mr, ref, cfg.max_len) for mr, ref in read_split(cfg.data_root, "train")]
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = cfg.max_steps or cfg.epochs * per_epoch
    opt = optimizer(model, cfg)
    order = torch.Generator().manual_seed(run.seed)
    parts = {"model": model, "opt": opt, "order": order}
    step, perm = 0, None
    if (state := run.resume_state()) is not None:
        step = restore(state, parts)["step"]
    pad = tok.token_to_id(EOS)
    run.progress(total)
    model.train()
    while step < total:
        if step % per_epoch == 0 or perm is None:  # a fresh shuffle each epoch (replayed on resume)
            g = torch.Generator().manual_seed(run.seed * 1000 + step // per_epoch)
            perm = torch.randperm(len(examples), generator=g).tolist()
        i = step % per_epoch
        batch = [examples[j] for j in perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
        x, y = collate(batch, pad)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, cfg)
        loss = loss_of(model, x.to(run.device), y.to(run.device), cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == total:
            run.log(step, train_loss=loss.item(), lr=lr_at(step - 1, total, cfg))
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    model.eval()
    return model


def dry_run_step(model: E2EModel, cfg: Config) -> dict[str, float]:
    """One AdamW step on the first two training examples."""
    tok = model.tok
    batch = [encode_example(tok, mr, ref, cfg.max_len) for mr, ref in read_split(cfg.data_root, "train")[:2]]
    x, y = collate(batch, tok.token_to_id(EOS))
    opt = optimizer(model, cfg)
    loss = loss_of(model, x, y, cfg.label_smoothing)
    loss.backward()
    opt.step()
    return {"loss": loss.item(), "trainable_parameters": float(model.trainable_parameters())}


def required_data(cfg: Config) -> list[str]:
    missing = []
    model_dir, data_root = Path(cfg.model_dir), Path(cfg.data_root)
    for name in MODEL_FILES:
        if not (model_dir / name).is_file():
            missing.append(f"GPT-2 Medium: {model_dir / name} not found (model_dir: a folder with the Hugging Face "
                           f"'gpt2-medium' files {', '.join(MODEL_FILES)})")
    for name in DATA_FILES:
        if not (data_root / name).is_file():
            missing.append(f"E2E NLG: {data_root / name} not found (data_root: the authors' e2e folder, "
                           f"microsoft/LoRA examples/NLG/data/e2e, {', '.join(DATA_FILES)}: one "
                           f"'meaning representation||reference' per line)")
    return missing


def data_fingerprint(cfg: Config) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in DATA_FILES:
        h.update(name.encode() + hashlib.sha256((Path(cfg.data_root) / name).read_bytes()).digest())
    weights = hashlib.sha256((Path(cfg.model_dir) / "model.safetensors").read_bytes()).hexdigest()[:16]
    return f"E2E sha256:{h.hexdigest()[:16]}; GPT-2 weights sha256:{weights}"
