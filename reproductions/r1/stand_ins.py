"""The dry run's stand-ins for the full tier's absent inputs (imported by `repro reproduce
--dry-run` alone, never by a run): a Hugging Face folder in the layout of a Qwen2 checkpoint
(`config.json` of a `Qwen2ForCausalLM`, safetensors weights, a fast tokenizer) holding a tiny
random model (1 layer, width 32), which transformers and lm-eval's own `hf` model load as they
would the real one; and a JSON-lines file of four MATH-style problems. Configs without a
`checkpoint_path` (the mini tier's) come back unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.tasks.stand_ins import checkpoint_and_jsonl, write_causal_lm

PROBLEMS = [{"problem": "What is $2 + 3$?", "answer": "5"}, {"problem": "Compute $\\frac{1}{2} + \\frac{1}{4}$.",
                                                              "answer": "\\frac{3}{4}"},
            {"problem": "Solve $x + 1 = 4$.", "answer": "3"}, {"problem": "What is $7 \\times 6$?", "answer": "42"}]


def write_checkpoint(root: Path) -> Path:
    from reproductions.r1.full import TEMPLATE

    text = [TEMPLATE.format(prompt=p["problem"]) + " <think> 2 + 3 = 5 </think> <answer> 5 </answer>" for p in PROBLEMS]
    return write_causal_lm(root, text, "Qwen2", 400, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)


def stand_in_data(config: Any, folder: Path) -> Any:
    return checkpoint_and_jsonl(config, folder, write_checkpoint, "Qwen2-stand-in", "math_train.jsonl", PROBLEMS)
