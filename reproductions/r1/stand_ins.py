"""The dry run's stand-ins for the full tier's absent inputs (imported by `repro reproduce
--dry-run` alone, never by a run): a Hugging Face folder in the layout of a Qwen2 checkpoint
(`config.json` of a `Qwen2ForCausalLM`, safetensors weights, a fast tokenizer) holding a tiny
random model (1 layer, width 32), which transformers and lm-eval's own `hf` model load as they
would the real one; and a JSON-lines file of four MATH-style problems. Configs without a
`checkpoint_path` (the mini tier's) come back unchanged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

PROBLEMS = [{"problem": "What is $2 + 3$?", "answer": "5"}, {"problem": "Compute $\\frac{1}{2} + \\frac{1}{4}$.",
                                                              "answer": "\\frac{3}{4}"},
            {"problem": "Solve $x + 1 = 4$.", "answer": "3"}, {"problem": "What is $7 \\times 6$?", "answer": "42"}]


def write_checkpoint(root: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from reproductions.r1.full import TEMPLATE

    text = [TEMPLATE.format(prompt=p["problem"]) + " <think> 2 + 3 = 5 </think> <answer> 5 </answer>" for p in PROBLEMS]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    config = Qwen2Config(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         eos_token_id=1, pad_token_id=1, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(str(root), safe_serialization=True)
    fast.save_pretrained(str(root))
    return root


def stand_in_data(config: Any, folder: Path) -> Any:
    if not hasattr(config, "checkpoint_path"):
        return config
    changes = {}
    if not (Path(config.checkpoint_path) / "config.json").is_file():
        changes["checkpoint_path"] = str(write_checkpoint(Path(folder) / "Qwen2-stand-in"))
    if not Path(config.train_data).is_file():
        path = Path(folder) / "math_train.jsonl"
        path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
        changes["train_data"] = str(path)
    return dataclasses.replace(config, **changes)
