"""The dry run's stand-in for the absent Mixtral checkpoint (imported by `repro reproduce --dry-run`
alone, never by a run): a Hugging Face folder in the layout of mistralai/Mixtral-8x7B-v0.1
(`config.json` of a `MixtralForCausalLM`, safetensors weights, a fast tokenizer) holding a tiny
random Mixtral (2 experts, top-1 routing, 1 layer, width 32), which lm-eval's own `hf` model
loads as it would the real one. Configs without a `checkpoint_path` come back unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

TEXT = ["def add(a, b):\n    return a + b\n", "Question: What is 2 + 3?\nAnswer: 5", "The cat sat on the mat.",
        "for i in range(10):\n    print(i)\n", "import os\nprint(os.getcwd())\n"]


def write_checkpoint(root: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MixtralConfig, MixtralForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    config = MixtralConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=2, num_experts_per_tok=1,
                           max_position_embeddings=512, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    MixtralForCausalLM(config).to(torch.bfloat16).save_pretrained(str(root), safe_serialization=True)
    fast.save_pretrained(str(root))
    return root


def stand_in_data(config: Any, folder: Path) -> Any:
    if not hasattr(config, "checkpoint_path") or (Path(config.checkpoint_path) / "config.json").is_file():
        return config
    return dataclasses.replace(config, checkpoint_path=str(write_checkpoint(Path(folder) / "Mixtral-stand-in")))
