"""Win rate against the dataset's preferred responses, as DPO (arXiv 2305.18290, Section 6.2, Figure 3)
scores single-turn dialogue on Anthropic HH, with a local reward model as the judge in place of
GPT-4.

Protocol: the first `n` lines of `test_data`, JSON lines `{"prompt", "chosen", "rejected"}` (the
prompt in HH's format, `\\n\\nHuman: ...\\n\\nAssistant:`); the agent (`Responder`) answers each prompt
once at `temperature` (the paper's Figure 3 left: 1.0) with at most `max_new_tokens` tokens, from a
generator seeded with `seed`. The judge, a Hugging Face sequence-classification reward model at
`judge_path` (e.g. OpenAssistant's reward-model-deberta-v3-large-v2), scores (prompt, response)
pairs by its first logit. Per prompt (samples):
- `win_rate_vs_chosen`: 1 where the policy's response scores above the chosen one, 0.5 on a tie, 0
  below; its mean is the metric;
- `judge_score` and `chosen_judge_score`: the two scores.
Nothing is downloaded: the judge and the data must be on disk; a dry run writes tiny stand-ins.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import Responder, capability
from evals.evaluators import Measured, register, shrunk


class WinRateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    test_data: str = "data/anthropic_hh/test_single_turn.jsonl"
    judge_path: str = "checkpoints/reward-model-deberta-v3-large-v2"
    n: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)
    seed: int = 0


def tiny(options: WinRateOptions) -> WinRateOptions:
    return shrunk(options, n=2, max_new_tokens=8, batch_size=2)


def _names(o: WinRateOptions) -> list[str]:
    return ["win_rate_vs_chosen", "judge_score", "chosen_judge_score"]


def missing_inputs(options: WinRateOptions) -> list[str]:
    missing = []
    if not Path(options.test_data).is_file():
        missing.append(f"win_rate: test prompts as JSON lines {{\"prompt\", \"chosen\", \"rejected\"}} (Anthropic HH, "
                       f"single-turn test split) at test_data={options.test_data!r}")
    if not (Path(options.judge_path) / "config.json").is_file():
        missing.append(f"win_rate: a Hugging Face sequence-classification reward model (e.g. OpenAssistant/"
                       f"reward-model-deberta-v3-large-v2) at judge_path={options.judge_path!r}")
    return missing


STAND_IN_ROWS = [{"prompt": "\n\nHuman: How do I boil an egg?\n\nAssistant:", "chosen": " Put it in boiling water for "
                  "eight minutes.", "rejected": " I don't know."},
                 {"prompt": "\n\nHuman: What is the capital of France?\n\nAssistant:", "chosen": " Paris.",
                  "rejected": " Lyon, I think."}]


def write_stand_in_judge(root: Path) -> Path:
    """A tiny random GPT-2 sequence classifier and its byte-level BPE tokenizer, in the layout of a
    Hugging Face reward model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    text = [r["prompt"] + r["chosen"] + r["rejected"] for r in STAND_IN_ROWS]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    config = GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=16, n_layer=1, n_head=2, n_positions=1024,
                        num_labels=1, pad_token_id=1, eos_token_id=1, bos_token_id=1)
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(str(root), safe_serialization=True)
    fast.save_pretrained(str(root))
    return root


def stand_in(options: WinRateOptions, folder) -> tuple[WinRateOptions, list[str]]:
    missing, update = missing_inputs(options), {}
    if not Path(options.test_data).is_file():
        path = Path(folder) / "hh_test.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in STAND_IN_ROWS))
        update["test_data"] = str(path)
    if not (Path(options.judge_path) / "config.json").is_file():
        update["judge_path"] = str(write_stand_in_judge(Path(folder) / "judge-stand-in"))
    return options.model_copy(update=update), missing


@torch.no_grad()
def judge_scores(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int) -> list[float]:
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i:i + batch_size], responses[i:i + batch_size], return_tensors="pt", padding=True,
                        truncation=True, max_length=min(getattr(tokenizer, "model_max_length", 1024), 1024))
        out += model(**enc).logits[:, 0].float().tolist()
    return out


@register("win_rate", version=1, options=WinRateOptions, metric_names=_names, tiny=tiny, stand_in=stand_in)
def win_rate(agent, config, options: WinRateOptions) -> Measured:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    responder = capability(agent, Responder, "win_rate")
    if missing := missing_inputs(options):
        raise FileNotFoundError("; ".join(missing))
    with open(options.test_data) as f:
        rows = [json.loads(line) for line in f if line.strip()][:options.n]
    prompts = [r["prompt"] for r in rows]
    generator = torch.Generator().manual_seed(options.seed)
    responses = []
    for i in range(0, len(prompts), options.batch_size):
        responses += responder.respond(prompts[i:i + options.batch_size], options.temperature, options.max_new_tokens,
                                       generator)
    tokenizer = AutoTokenizer.from_pretrained(options.judge_path)
    judge = AutoModelForSequenceClassification.from_pretrained(options.judge_path).eval()
    ours = judge_scores(judge, tokenizer, prompts, responses, options.batch_size)
    chosen = judge_scores(judge, tokenizer, prompts, [r["chosen"] for r in rows], options.batch_size)
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(ours, chosen)]
    n = len(rows)
    metrics = {"win_rate_vs_chosen": sum(wins) / n, "judge_score": sum(ours) / n, "chosen_judge_score": sum(chosen) / n}
    samples = {"win_rate_vs_chosen": wins, "judge_score": ours, "chosen_judge_score": chosen}
    protocol = {"test_data": options.test_data, "prompts": n, "judge": options.judge_path,
                "sampling": f"temperature {options.temperature}, at most {options.max_new_tokens} new tokens, "
                            f"seed {options.seed}",
                "win": "the judge's first logit for (prompt, policy response) above that for (prompt, chosen); "
                       "a tie counts 0.5",
                "examples": [{"prompt": p, "response": r} for p, r in zip(prompts[:3], responses[:3])]}
    return Measured(metrics=metrics, samples=samples, protocol=protocol)
