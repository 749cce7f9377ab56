"""The dry run's stand-ins for the full tier's absent inputs (imported by `repro reproduce
--dry-run` alone, never by a run): a Hugging Face folder in the layout of a Pythia checkpoint
(`config.json` of a `GPTNeoXForCausalLM`, safetensors weights, a fast tokenizer) holding a tiny
random model, and a JSON-lines file of HH-style preference pairs. Configs without a
`checkpoint_path` (the mini tier's) come back unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.tasks.stand_ins import checkpoint_and_jsonl, write_causal_lm

PAIRS = [{"prompt": "\n\nHuman: How do I boil an egg?\n\nAssistant:", "chosen": " Put it in boiling water for eight "
          "minutes.", "rejected": " I don't know."},
         {"prompt": "\n\nHuman: What is the capital of France?\n\nAssistant:", "chosen": " Paris.",
          "rejected": " Lyon, I think."},
         {"prompt": "\n\nHuman: Can you help me write a poem?\n\nAssistant:", "chosen": " Of course: what about?",
          "rejected": " No."}]


def write_checkpoint(root: Path) -> Path:
    return write_causal_lm(root, [p["prompt"] + p["chosen"] + p["rejected"] for p in PAIRS], "GPTNeoX", 300,
                           hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)


def stand_in_data(config: Any, folder: Path) -> Any:
    return checkpoint_and_jsonl(config, folder, write_checkpoint, "pythia-stand-in", "hh_train.jsonl", PAIRS)
