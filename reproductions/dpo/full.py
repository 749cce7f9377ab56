"""The full tier: DPO (`dpo.py`'s eq. 7, imported) on Anthropic HH single-turn dialogue with the
paper's model (Pythia-2.8B), for a GPU, scored by the `win_rate` evaluator: the win rate of the
policy's responses at temperature 1 against the dataset's chosen responses, judged by a local
reward model instead of GPT-4 (Section 6.2, Figure 3 left).

The paper's recipe (Section 6.1 and Appendix B): supervised fine-tuning on the preferred
completions first (`sft_steps`), that model being pi_ref; then DPO at beta 0.1, RMSprop at learning
rate 1e-6 with a linear warm-up over 150 steps, batch 64 pairs. Data: JSON lines
`{"prompt", "chosen", "rejected"}` with HH's `\\n\\nHuman: ...\\n\\nAssistant:` prompts (the
single-turn part of the train split). Nothing is downloaded: the checkpoint and the data must be on
disk (`required_data`); the dry run writes tiny stand-ins (`stand_ins.py`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from evals.contract import RunContext
from reproductions.dpo.dpo import dpo_loss


@dataclass
class Config:
    checkpoint_path: str = "checkpoints/pythia-2.8b"          # a local Hugging Face folder (safetensors)
    train_data: str = "data/anthropic_hh/train_single_turn.jsonl"
    dtype: str = "bfloat16"
    sft_steps: int = 1000            # SFT on the chosen responses (pi_ref); 0: the checkpoint is already SFT
    sft_lr: float = 1e-6
    steps: int = 2000                # DPO steps of `batch` pairs
    batch: int = 64                  # the paper's batch size
    micro_batch: int = 8             # pairs per forward/backward (gradient accumulation)
    beta: float = 0.1                # the paper's beta for dialogue
    lr: float = 1e-6                 # RMSprop (the paper)
    warmup_steps: int = 150
    max_length: int = 512            # prompt + response tokens
    log_every: int = 10


class TrainedPolicy:
    """The policy in Hugging Face format (the Responder capability): saved as its weights in
    safetensors, loaded back onto the base checkpoint."""

    def __init__(self, cfg: Config, model=None, tokenizer=None):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer

    def num_parameters(self) -> int:
        return 0 if self.model is None else sum(p.numel() for p in self.model.parameters())

    def save(self, path) -> None:
        seen, state = set(), {}
        for k, v in self.model.state_dict().items():   # tied tensors once each, as safetensors requires
            if v.data_ptr() not in seen:
                seen.add(v.data_ptr())
                state[k] = v.detach().cpu().contiguous()
        save_file(state, str(path), metadata={"base_checkpoint": self.cfg.checkpoint_path})

    def load(self, path) -> "TrainedPolicy":
        self.model, self.tokenizer = _load(self.cfg)
        self.model.load_state_dict(load_file(str(path)), strict=False)
        return self

    @torch.no_grad()
    def respond(self, prompts: list[str], temperature: float, max_new_tokens: int,
                generator: torch.Generator) -> list[str]:
        if self.model is None:
            self.model, self.tokenizer = _load(self.cfg)
        self.model.eval()
        device = next(self.model.parameters()).device
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))  # HF's sampler draws globally
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else \
            {"do_sample": False}
        out = self.model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                  **sampling)
        return self.tokenizer.batch_decode(out[:, enc["input_ids"].size(1):], skip_special_tokens=True)


def _load(cfg: Config):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.checkpoint_path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(cfg.checkpoint_path, dtype=getattr(torch, cfg.dtype))
    return model, tokenizer


def build(cfg: Config) -> TrainedPolicy:
    return TrainedPolicy(cfg)


def read_pairs(cfg: Config) -> list[dict]:
    with open(cfg.train_data) as f:
        return [json.loads(line) for line in f if line.strip()]


def encode(tokenizer, prompts: list[str], responses: list[str], max_length: int, device):
    """prompt + response + eos, right-padded: (ids, attention, response mask over ids)."""
    rows, masks = [], []
    for p, r in zip(prompts, responses):
        p_ids = tokenizer(p)["input_ids"]
        r_ids = tokenizer(r)["input_ids"] + [tokenizer.eos_token_id]
        ids = (p_ids + r_ids)[:max_length]
        rows.append(ids)
        masks.append(([0] * len(p_ids) + [1] * len(r_ids))[:max_length])
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    response = torch.zeros_like(ids)
    for i, (r, m) in enumerate(zip(rows, masks)):
        ids[i, :len(r)], attention[i, :len(r)], response[i, :len(m)] = torch.tensor(r), 1, torch.tensor(m)
    return ids.to(device), attention.to(device), response.to(device)


def response_logprobs(model, ids, attention, response) -> torch.Tensor:
    """log pi(response | prompt) per row: the response tokens' log-probabilities summed."""
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logp * response[:, 1:]).sum(1)


def dpo_step(model, reference, tokenizer, opt, cfg: Config, batch: list[dict], device) -> dict[str, float]:
    """One optimiser step of eq. (7) over `batch`, in micro-batches."""
    opt.zero_grad(set_to_none=True)
    total, correct = 0.0, 0.0
    for i in range(0, len(batch), cfg.micro_batch):
        part = batch[i:i + cfg.micro_batch]
        prompts = [r["prompt"] for r in part]
        chosen = encode(tokenizer, prompts, [r["chosen"] for r in part], cfg.max_length, device)
        rejected = encode(tokenizer, prompts, [r["rejected"] for r in part], cfg.max_length, device)
        with torch.no_grad():
            ref_c, ref_r = response_logprobs(reference, *chosen), response_logprobs(reference, *rejected)
        lc, lr = response_logprobs(model, *chosen), response_logprobs(model, *rejected)
        loss = dpo_loss(lc, lr, ref_c, ref_r, cfg.beta) * len(part) / len(batch)
        loss.backward()
        total += loss.item()
        correct += ((lc - ref_c) > (lr - ref_r)).float().sum().item()
    opt.step()
    return {"dpo_loss": total, "reward_accuracy": correct / len(batch)}


def sft_step(model, tokenizer, opt, cfg: Config, batch: list[dict], device) -> float:
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for i in range(0, len(batch), cfg.micro_batch):
        part = batch[i:i + cfg.micro_batch]
        ids, attention, response = encode(tokenizer, [r["prompt"] for r in part], [r["chosen"] for r in part],
                                          cfg.max_length, device)
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        targets = ids[:, 1:].masked_fill(response[:, 1:] == 0, -100)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100) * len(part) / len(batch)
        loss.backward()
        total += loss.item()
    opt.step()
    return total


def train(cfg: Config, run: RunContext) -> TrainedPolicy:
    model, tokenizer = _load(cfg)
    model.to(run.device).train()
    pairs = read_pairs(cfg)
    order = torch.Generator().manual_seed(run.seed)

    def batch() -> list[dict]:
        return [pairs[i] for i in torch.randint(0, len(pairs), (cfg.batch,), generator=order).tolist()]

    run.progress(cfg.sft_steps + cfg.steps)
    if cfg.sft_steps:
        sft_opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr)
        for step in range(1, cfg.sft_steps + 1):
            loss = sft_step(model, tokenizer, sft_opt, cfg, batch(), run.device)
            if step % cfg.log_every == 0:
                run.log(step, sft_loss=loss)
            run.advance()
    reference = copy.deepcopy(model).eval().requires_grad_(False)      # pi_ref = pi_SFT
    opt = torch.optim.RMSprop(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps))
    for step in range(1, cfg.steps + 1):
        values = dpo_step(model, reference, tokenizer, opt, cfg, batch(), run.device)
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(cfg.sft_steps + step, **values)
        run.advance()
    return TrainedPolicy(cfg, model.eval(), tokenizer)


def dry_run_step(agent: TrainedPolicy, cfg: Config) -> dict[str, float]:
    model, tokenizer = _load(cfg)
    model = model.float()
    agent.model, agent.tokenizer = model, tokenizer
    small = Config(**{**cfg.__dict__, "micro_batch": 2, "max_length": 64})
    reference = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.RMSprop(model.parameters(), lr=cfg.lr)
    return dpo_step(model, reference, tokenizer, opt, small, read_pairs(cfg)[:2], "cpu")


def required_data(cfg: Config) -> list[str]:
    missing = []
    if not (Path(cfg.checkpoint_path) / "config.json").is_file():
        missing.append(f"the paper's model in Hugging Face format (config.json, safetensors, tokenizer; "
                       f"EleutherAI/pythia-2.8b) at checkpoint_path={cfg.checkpoint_path!r}")
    if not Path(cfg.train_data).is_file():
        missing.append(f"Anthropic HH single-turn training pairs as JSON lines {{\"prompt\", \"chosen\", \"rejected\"}} "
                       f"at train_data={cfg.train_data!r}")
    return missing


def data_fingerprint(cfg: Config) -> str:
    n = len(read_pairs(cfg)) if Path(cfg.train_data).is_file() else 0
    return f"{cfg.train_data} ({n} pairs), starting checkpoint {cfg.checkpoint_path}"

