"""The full tier: budget forcing (`forcing.py`, imported) of a local reasoning checkpoint in Hugging
Face format (the paper's s1-32B by default), scored by lm-eval on AIME 2024, MATH-500 and GPQA
Diamond, for a GPU.

Nothing is trained here: the paper's claims checked at this scale are its test-time ones (Table 1:
s1-32B with and without budget forcing). The agent hands the `lm_eval` evaluator an lm-eval model
(`lm_eval_model()`, the `LMEvalModel` capability): lm-eval's own `hf` model (`HFLM`), whose
`generate_until` decodes under budget forcing with s1's template (their `eval/` code):

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n<|im_start|>think\\n   ...thinking...
    <|im_start|>answer\\nFinal Answer: ...

The thinking ends when the model generates `<|im_start|>` (the end-of-thinking delimiter); at
`max_thinking` tokens `<|im_start|>answer\\nFinal Answer:` is forced; the first `extensions`
delimiters are suppressed and `wait` ("Wait") appended instead. lm-eval's loglikelihood requests
(none in these tasks) are HFLM's own. Nothing is downloaded: the checkpoint must be on disk
(`required_data`); the dry run writes a tiny stand-in (`stand_ins.py`, R1's Qwen2 stand-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from evals.contract import RunContext
from reproductions.s1.forcing import Delimiters, forced_sample

SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


@dataclass
class Config:
    checkpoint_path: str = "checkpoints/s1-32B"     # a local Hugging Face folder (safetensors)
    dtype: str = "bfloat16"
    max_thinking: int | None = None                 # the cap in thinking tokens (None: none)
    extensions: int = 0                             # ends of thinking suppressed
    wait: str = "Wait"                              # appended at a suppressed end ("" : suppression alone)
    max_new_tokens: int = 32768                     # the paper's generation limit
    system: str = SYSTEM
    think_open: str = "<|im_start|>think\n"
    end_of_thinking: str = "<|im_start|>"
    answer_open: str = "<|im_start|>answer\nFinal Answer:"
    stop: tuple[str, ...] = ("<|im_end|>",)


def prompt_of(cfg: Config, question: str) -> str:
    return (f"<|im_start|>system\n{cfg.system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n")


class HFStep:
    """A Hugging Face causal LM as `forced_sample` calls a model: `(feed, caches) -> (logits,)`, its
    key/value cache kept in `caches[0]` (one sequence at a time: no padding)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, feed, caches):
        out = self.model(input_ids=feed, past_key_values=caches[0].get("past"), use_cache=True)
        caches[0]["past"] = out.past_key_values
        return (out.logits,)


def single_token(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"s1 full: the end-of-thinking delimiter {text!r} is {len(ids)} tokens in this tokenizer, not 1")
    return ids[0]


def delimiters_for(cfg: Config, tokenizer) -> Delimiters:
    enc = lambda t: tuple(tokenizer.encode(t, add_special_tokens=False))   # noqa: E731
    end = single_token(tokenizer, cfg.end_of_thinking)
    stop = {tokenizer.eos_token_id, *(single_token(tokenizer, s) for s in cfg.stop)} - {None}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Delimiters(opening=enc(cfg.think_open), end=end, at_cap=(end, *enc(cfg.answer_open[len(cfg.end_of_thinking):])),
                      stop=tuple(sorted(stop)), pad=pad)


def forced_generate(model, tokenizer, cfg: Config, question: str, max_new_tokens: int) -> str:
    """One question under budget forcing, greedily (the paper's protocol); the text after the
    thinking (the answer part) when the thinking ended, else everything generated."""
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt_of(cfg, question), add_special_tokens=False)], device=device)
    window = getattr(model.config, "max_position_embeddings", None)
    if window is not None:                  # the generation fits the model's context
        max_new_tokens = max(1, min(max_new_tokens, window - ids.size(1)))
    d = delimiters_for(cfg, tokenizer)
    wait = tuple(tokenizer.encode(cfg.wait, add_special_tokens=False)) if cfg.wait else ()
    out = forced_sample(HFStep(model), ids, max_new_tokens, 0.0, 1.0, torch.Generator(), max_thinking=cfg.max_thinking,
                        extensions=cfg.extensions, continuation=wait, delimiters=d)[0].tolist()
    out = [t for t in out if t != d.pad or t in d.stop]
    ends = [i for i, t in enumerate(out) if t == d.end]
    answer = out[ends[0] + 1:] if ends else out[len(d.opening):]
    return tokenizer.decode([t for t in answer if t not in d.stop], skip_special_tokens=True)


def lm_eval_model_class():
    from lm_eval.models.huggingface import HFLM

    class BudgetForcedHFLM(HFLM):
        """lm-eval's `hf` model whose generation is budget-forced (s1's template, greedy)."""

        def __init__(self, cfg: Config, **kwargs):
            super().__init__(pretrained=cfg.checkpoint_path, dtype=cfg.dtype, **kwargs)
            self.s1_cfg = cfg

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            out = []
            for req in requests:
                context, kwargs = req.args
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                # the paper's generation limit, not the task's max_gen_toks (s1 passes max_gen_toks=32768)
                text = forced_generate(self.model, self.tokenizer, self.s1_cfg, context, self.s1_cfg.max_new_tokens)
                cut = min((text.find(s) for s in until if s and s in text), default=len(text))
                out.append(text[:cut])
            return out

    return BudgetForcedHFLM


class ForcedCheckpoint:
    """A published reasoning checkpoint decoded under budget forcing (the `LMEvalModel` capability).
    Nothing is trained: `save` writes only its settings."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def lm_eval_model(self, batch_size: int = 1):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return lm_eval_model_class()(self.cfg, device=device, batch_size=batch_size)

    def num_parameters(self) -> int:
        return 0

    def save(self, path) -> None:
        from safetensors.torch import save_file

        save_file({"max_thinking": torch.tensor([-1 if self.cfg.max_thinking is None else self.cfg.max_thinking]),
                   "extensions": torch.tensor([self.cfg.extensions])}, str(path),
                  metadata={"checkpoint_path": self.cfg.checkpoint_path, "wait": self.cfg.wait})

    def load(self, path) -> "ForcedCheckpoint":
        return self


def build(cfg: Config) -> ForcedCheckpoint:
    return ForcedCheckpoint(cfg)


def train(cfg: Config, run: RunContext) -> ForcedCheckpoint:
    run.progress(1)
    run.advance()
    return ForcedCheckpoint(cfg)


def dry_run_step(agent: ForcedCheckpoint, cfg: Config) -> dict[str, float]:
    """One budget-forced generation with the checkpoint, on the CPU: the cap is kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.checkpoint_path)
    model = AutoModelForCausalLM.from_pretrained(cfg.checkpoint_path, dtype=torch.float32).eval()
    small = Config(**{**cfg.__dict__, "max_thinking": 4, "extensions": 1})
    text = forced_generate(model, tokenizer, small, "What is 2 + 3?", 12)
    return {"answer_chars": float(len(text))}


def required_data(cfg: Config) -> list[str]:
    if (Path(cfg.checkpoint_path) / "config.json").is_file():
        return []
    return [f"a reasoning checkpoint in Hugging Face format (config.json, safetensors, tokenizer; the paper's "
            f"simplescaling/s1-32B) at checkpoint_path={cfg.checkpoint_path!r}"]


def data_fingerprint(cfg: Config) -> str:
    return (f"no training; {cfg.checkpoint_path} decoded under budget forcing (max_thinking={cfg.max_thinking}, "
            f"extensions={cfg.extensions}, wait={cfg.wait!r})")
