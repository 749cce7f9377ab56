"""The full tier: GRPO (`grpo.py`'s eqs. 1-3, imported) on a small open Hugging Face model, with
R1-Zero's template (Table 1) and rule-based rewards on MATH training problems, for a GPU; the
trained model is scored by lm-eval on MATH-500 and AIME 2024 (the `lm_eval` evaluator, through
lm-eval's own `hf` model, as for Mixtral's published checkpoint).

The training data is a JSON-lines file of `{"problem": ..., "answer": ...}` (the MATH training
split with each solution's final boxed answer); the accuracy reward compares the answer inside
`<answer>` tags (a `\\boxed{}` there unwrapped) with it after a light normalisation (spaces,
`$`, `\\left`/`\\right`, `\\!`, `dfrac`/`tfrac`, a trailing period; numbers compared as numbers),
a rule rather than a symbolic checker. Nothing is downloaded: the checkpoint and the data must be
on disk (`required_data`); the dry run writes tiny stand-ins (`stand_ins.py`).
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from evals.contract import RunContext
from reproductions.r1.grpo import group_advantages, grpo_loss

# R1-Zero's template (Table 1 of the paper), the prompt placed where it says "prompt"
TEMPLATE = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
            "The assistant first thinks about the reasoning process in the mind and then provides the user with "
            "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
            "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
            "</answer>. User: {prompt}. Assistant:")
_FORMAT_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass
class Config:
    checkpoint_path: str = "checkpoints/Qwen2.5-Math-1.5B"   # a local Hugging Face folder (safetensors)
    train_data: str = "data/math/train.jsonl"                # {"problem", "answer"} per line
    dtype: str = "bfloat16"
    steps: int = 500
    prompts_per_step: int = 32
    group_size: int = 16              # G (the paper: 16 outputs per question)
    max_new_tokens: int = 1024
    lr: float = 3e-6                  # the paper's learning rate for DeepSeek-R1-Zero
    beta: float = 0.001               # the paper's KL coefficient for R1-Zero
    clip_eps: float = 0.2
    temperature: float = 1.0          # rollouts at temperature 1 (the paper)
    micro_batch: int = 16             # outputs per forward/backward
    accuracy_weight: float = 1.0
    format_weight: float = 1.0
    grad_clip: float = 1.0
    log_every: int = 1


# -- rule-based rewards on MATH ----------------------------------------------------------------
def normalise(answer: str) -> str:
    a = answer.strip()
    boxed = re.search(r"\\boxed\{(.*)\}", a, re.DOTALL)
    if boxed:
        a = boxed.group(1)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("dfrac", "frac"), ("tfrac", "frac"), ("$", "")):
        a = a.replace(old, new)
    a = re.sub(r"\s+", "", a).rstrip(".")
    try:
        return repr(float(a.replace(",", "")))
    except ValueError:
        return a


def accuracy_reward(text: str, answer: str) -> float:
    m = _ANSWER_RE.search(text)
    return 1.0 if m is not None and normalise(m.group(1)) == normalise(answer) else 0.0


def format_reward(text: str) -> float:
    return 1.0 if _FORMAT_RE.fullmatch(text) else 0.0


# -- the agent: a trained Hugging Face model, scored by lm-eval's own `hf` model -----------------
class TrainedCheckpoint:
    """The policy in Hugging Face format at `checkpoint_path` (the PublishedCheckpoint capability);
    saved as its weights in safetensors, loaded back into a folder lm-eval reads."""

    def __init__(self, cfg: Config, model=None):
        self.cfg, self.model, self.dtype = cfg, model, cfg.dtype
        self.checkpoint_path = cfg.checkpoint_path

    def num_parameters(self) -> int:
        return 0 if self.model is None else sum(p.numel() for p in self.model.parameters())

    def export(self, folder: Path) -> None:
        """The model and the base checkpoint's tokenizer as a Hugging Face folder."""
        from transformers import AutoTokenizer

        self.model.save_pretrained(str(folder), safe_serialization=True)
        AutoTokenizer.from_pretrained(self.cfg.checkpoint_path).save_pretrained(str(folder))
        self.checkpoint_path = str(folder)

    def save(self, path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(_untied(state), str(path), metadata={"base_checkpoint": self.cfg.checkpoint_path})

    def load(self, path) -> "TrainedCheckpoint":
        self.model = _load_model(self.cfg)
        self.model.load_state_dict(load_file(str(path)), strict=False)
        self.export(Path(tempfile.mkdtemp(prefix="r1-policy-")))
        return self


def _untied(state: dict) -> dict:
    """Tensors that share storage (tied embeddings) stored once each, as safetensors requires."""
    seen, out = set(), {}
    for k, v in state.items():
        if v.data_ptr() in seen:
            continue
        seen.add(v.data_ptr())
        out[k] = v
    return out


def _load_model(cfg: Config):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(cfg.checkpoint_path, dtype=getattr(torch, cfg.dtype))


def build(cfg: Config) -> TrainedCheckpoint:
    return TrainedCheckpoint(cfg)


def read_problems(cfg: Config) -> list[dict]:
    with open(cfg.train_data) as f:
        return [json.loads(line) for line in f if line.strip()]


# -- one GRPO iteration with a Hugging Face model ----------------------------------------------
def _logprobs(model, seqs, attention, start: int) -> torch.Tensor:
    logits = model(input_ids=seqs, attention_mask=attention).logits[:, start - 1:-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, seqs[:, start:, None]).squeeze(-1)


def grpo_step(model, reference, tokenizer, opt, cfg: Config, batch: list[dict], device) -> dict[str, float]:
    prompts = [TEMPLATE.format(prompt=item["problem"]) for item in batch for _ in range(cfg.group_size)]
    answers = [item["answer"] for item in batch for _ in range(cfg.group_size)]
    enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    model.eval()
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=cfg.temperature, top_p=1.0, top_k=0,
                             max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    model.train()
    start = enc["input_ids"].size(1)
    completions = out[:, start:]
    eos = (completions == tokenizer.eos_token_id).long()
    mask = (eos.cumsum(dim=1) - eos) == 0                      # up to and including the first end token
    texts = tokenizer.batch_decode(completions.masked_fill(~mask, tokenizer.pad_token_id), skip_special_tokens=True)
    acc = torch.tensor([accuracy_reward(t, a) for t, a in zip(texts, answers)])
    fmt = torch.tensor([format_reward(t) for t in texts])
    reward = cfg.accuracy_weight * acc + cfg.format_weight * fmt
    advantages = group_advantages(reward.view(len(batch), cfg.group_size)).flatten().to(device)
    attention = torch.cat([enc["attention_mask"], mask.long()], dim=1)
    opt.zero_grad(set_to_none=True)
    n, stats = out.size(0), {"kl": 0.0, "clip_frac": 0.0}
    for i in range(0, n, cfg.micro_batch):
        part = slice(i, i + cfg.micro_batch)
        with torch.no_grad():
            ref_logp = _logprobs(reference, out[part], attention[part], start)
        logp = _logprobs(model, out[part], attention[part], start)
        loss, s = grpo_loss(logp, logp.detach(), ref_logp, advantages[part], mask[part], cfg.clip_eps, cfg.beta)
        (loss * logp.size(0) / n).backward()
        for k in stats:
            stats[k] += s[k] * logp.size(0) / n
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return {"reward": reward.mean().item(), "accuracy": acc.mean().item(), "format": fmt.mean().item(),
            "completion_length": mask.sum(1).float().mean().item(), "grad_norm": grad_norm.item(), **stats}


def train(cfg: Config, run: RunContext) -> TrainedCheckpoint:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.checkpoint_path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = _load_model(cfg).to(run.device)
    reference = copy.deepcopy(model).eval().requires_grad_(False)   # pi_ref: the starting checkpoint
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    problems = read_problems(cfg)
    order = torch.Generator().manual_seed(run.seed)
    run.progress(cfg.steps)
    for step in range(1, cfg.steps + 1):
        picks = torch.randint(0, len(problems), (cfg.prompts_per_step,), generator=order).tolist()
        values = grpo_step(model, reference, tokenizer, opt, cfg, [problems[i] for i in picks], run.device)
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, **values)
        run.advance()
    agent = TrainedCheckpoint(cfg, model.eval())
    agent.export(Path(run.dir) / "policy")
    return agent


def dry_run_step(agent: TrainedCheckpoint, cfg: Config) -> dict[str, float]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.checkpoint_path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    agent.model = _load_model(cfg).float()
    small = Config(**{**cfg.__dict__, "group_size": 2, "max_new_tokens": 8, "micro_batch": 2})
    opt = torch.optim.AdamW(agent.model.parameters(), lr=cfg.lr)
    reference = copy.deepcopy(agent.model).requires_grad_(False)
    return grpo_step(agent.model, reference, tokenizer, opt, small, read_problems(cfg)[:2], "cpu")


def required_data(cfg: Config) -> list[str]:
    missing = []
    if not (Path(cfg.checkpoint_path) / "config.json").is_file():
        missing.append(f"a small open model in Hugging Face format (config.json, safetensors, tokenizer; e.g. "
                       f"Qwen/Qwen2.5-Math-1.5B) at checkpoint_path={cfg.checkpoint_path!r}")
    if not Path(cfg.train_data).is_file():
        missing.append(f"MATH training problems as JSON lines {{\"problem\", \"answer\"}} (the final boxed answer of "
                       f"each solution) at train_data={cfg.train_data!r}")
    return missing


def data_fingerprint(cfg: Config) -> str:
    n = len(read_problems(cfg)) if Path(cfg.train_data).is_file() else 0
    return f"{cfg.train_data} ({n} problems), starting checkpoint {cfg.checkpoint_path}"
