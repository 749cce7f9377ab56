"""The full tier: the paper's headline setting, T5-XXL as the target and T5-small as the draft,
English-to-German translation, batch size 1, argmax and standard sampling (Table 2, rows 'EnDe').

Both models are published Hugging Face checkpoints read from local folders (`target_checkpoint`,
`draft_checkpoint`; nothing is downloaded by a run), decoded by our speculative decoding through
`HFSeq2SeqDecoder` (the encoder runs once per sentence; the decoder's self-attention cache is cut
back after each pass). Nothing is trained: `train` loads the pair and measures it with the mini
tier's `measure.py`, and the `speculative_decoding` evaluator scores the measurements.

The source sentences are a text file, one English sentence per line (`sources`: newstest2014's
English side, as sacrebleu writes it), each prefixed with T5's task prefix
"translate English to German: ".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from safetensors import safe_open

from reproductions.speculative.decoders import HFSeq2SeqDecoder
from reproductions.speculative.measure import Measurements, measure
from reproductions.speculative.speculative import speculative_generate

TASK_PREFIX = "translate English to German: "


@dataclass
class Config:
    target_checkpoint: str = "checkpoints/t5-11b"      # T5-XXL (11B), Hugging Face format
    draft_checkpoint: str = "checkpoints/t5-small"     # T5-small (60M)
    sources: str = "data/wmt14/newstest2014.en"        # one English sentence per line
    dtype: str = "bfloat16"
    gammas: list[int] = field(default_factory=lambda: [1, 3, 5, 7])   # Table 2's EnDe rows use gamma 7
    prompts: int = 100                                  # sentences translated per mode
    new_tokens: int = 128                               # at most; generation stops at </s>
    draws: int = 2000
    draw_prefixes: int = 4
    draw_gamma: int = 7
    cost_repeats: int = 20


def _load(path: str, dtype: str, device):
    from transformers import AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()


class T5Pair:
    """The target and draft checkpoints, their tokenizer, and the measurements (taken by `train`, or
    when first read: the evaluator of a dry run reads them off the built pair)."""

    def __init__(self, cfg: Config, device: str | torch.device = "cpu", seed: int = 0):
        from transformers import AutoTokenizer

        self.cfg, self.seed = cfg, seed
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.target_checkpoint)
        self.target_model = _load(cfg.target_checkpoint, cfg.dtype, device)
        self.draft_model = _load(cfg.draft_checkpoint, cfg.dtype, device)
        self.target, self.draft = HFSeq2SeqDecoder(self.target_model), HFSeq2SeqDecoder(self.draft_model)
        self._measurements: Measurements | None = None

    def sentences(self) -> list[str]:
        lines = [s.strip() for s in Path(self.cfg.sources).read_text().splitlines() if s.strip()]
        return lines[: self.cfg.prompts]

    def prepare(self, sentence: str) -> list[int]:
        """Encode the source in both models; the decoder prompt is T5's start token."""
        ids = torch.tensor(self.tokenizer(TASK_PREFIX + sentence).input_ids)
        self.target.set_source(ids)
        self.draft.set_source(ids)
        return [self.target_model.config.decoder_start_token_id]

    def measure(self, progress=lambda: None) -> Measurements:
        sentences = self.sentences()
        c = self.cfg
        self._measurements = measure(self.target, self.draft, sentences, sentences[: c.draw_prefixes], gammas=c.gammas,
                                     new_tokens=c.new_tokens, draws=c.draws, draw_gamma=c.draw_gamma,
                                     cost_repeats=c.cost_repeats, seed=self.seed, progress=progress,
                                     prepare=self.prepare, eos=self.tokenizer.eos_token_id)
        return self._measurements

    @property
    def measurements(self) -> Measurements:
        return self._measurements if self._measurements is not None else self.measure()

    def num_parameters(self) -> int:
        return sum(p.numel() for m in (self.target_model, self.draft_model) for p in m.parameters())

    def save(self, path) -> None:
        """The measurements only (the weights are the published checkpoints)."""
        save_file({"gammas": torch.tensor(self.measurements.gammas)}, str(path),
                  metadata={"measurements": json.dumps(asdict(self.measurements)),
                            "target_checkpoint": self.cfg.target_checkpoint, "draft_checkpoint": self.cfg.draft_checkpoint})

    def load(self, path) -> "T5Pair":
        with safe_open(str(path), "pt") as f:
            self._measurements = Measurements(**json.loads(f.metadata()["measurements"]))
        return self


for _name in ("gammas", "seconds", "passes", "emitted", "identical", "beta", "draws", "measurement"):
    # the SpeculativeMeasurements capability of evals/contract.py
    setattr(T5Pair, _name, property(lambda self, n=_name: getattr(self.measurements, n)))


def build(cfg: Config) -> T5Pair:
    return T5Pair(cfg)


def train(cfg: Config, run) -> T5Pair:
    """Nothing is trained: load both checkpoints on the run's device and measure."""
    pair = T5Pair(cfg, run.device, run.seed)
    run.progress(min(cfg.prompts, len(pair.sentences())) + cfg.draw_prefixes, unit="sentence")
    pair.measure(progress=run.advance)
    return pair


def required_data(cfg: Config) -> list[str]:
    missing = []
    for what, path in (("T5-XXL (t5-11b) target", cfg.target_checkpoint), ("T5-small draft", cfg.draft_checkpoint)):
        if not (Path(path) / "config.json").is_file():
            missing.append(f"the {what} checkpoint in Hugging Face format (config.json, safetensors weights, "
                           f"tokenizer) at {path!r}: e.g. `huggingface-cli download google-t5/"
                           f"{Path(path).name} --local-dir {path}`")
    if not Path(cfg.sources).is_file():
        missing.append(f"the English source sentences, one per line, at {cfg.sources!r}: e.g. "
                       f"`sacrebleu -t wmt14 -l en-de --echo src > {cfg.sources}`")
    return missing


def data_fingerprint(cfg: Config) -> str:
    import hashlib

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"

    return (f"target {cfg.target_checkpoint} config sha256:{digest(Path(cfg.target_checkpoint) / 'config.json')}, "
            f"draft {cfg.draft_checkpoint} config sha256:{digest(Path(cfg.draft_checkpoint) / 'config.json')}, "
            f"sources {cfg.sources} sha256:{digest(Path(cfg.sources))}")


def dry_run_step(pair: T5Pair, cfg: Config) -> dict[str, float]:
    """No optimisation: one sentence decoded speculatively (greedy, the largest gamma) and checked
    against the target alone."""
    from reproductions.speculative.speculative import autoregressive_generate

    sentence = pair.sentences()[0]
    prompt = pair.prepare(sentence)
    eos = pair.tokenizer.eos_token_id
    spec = speculative_generate(pair.target, pair.draft, prompt, 16, max(cfg.gammas), eos=eos)
    alone = autoregressive_generate(pair.target, prompt, 16, eos=eos)
    return {"tokens_per_pass": sum(spec.per_iteration) / len(spec.per_iteration),
            "identical_to_target": float(spec.tokens == alone.tokens)}
