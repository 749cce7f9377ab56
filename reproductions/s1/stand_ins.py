"""The dry run's stand-in for the full tier's absent checkpoint (imported by `repro reproduce
--dry-run` alone, never by a run): R1's tiny random Qwen2 folder (`reproductions/r1/stand_ins.py`)
with s1's template tokens (`<|im_start|>`, `<|im_end|>`) added to its tokenizer and embedding, so
budget forcing finds its delimiters as in the real tokenizer. Configs without a `checkpoint_path`
(the mini tier's) come back unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def write_checkpoint(root: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reproductions.r1.stand_ins import write_checkpoint as r1_checkpoint

    r1_checkpoint(root)
    tokenizer = AutoTokenizer.from_pretrained(str(root))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    model = AutoModelForCausalLM.from_pretrained(str(root))
    model.config.max_position_embeddings = 96   # a short context: the dry run's generations stay short on a CPU
    torch.manual_seed(0)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(str(root), safe_serialization=True)
    tokenizer.save_pretrained(str(root))
    return root


def stand_in_data(config: Any, folder: Path) -> Any:
    if not hasattr(config, "checkpoint_path") or (Path(config.checkpoint_path) / "config.json").is_file():
        return config
    return dataclasses.replace(config, checkpoint_path=str(write_checkpoint(Path(folder) / "s1-stand-in")))
