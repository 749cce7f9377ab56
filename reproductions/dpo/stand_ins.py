"""The dry run's stand-ins for the full tier's absent inputs (imported by `repro reproduce
--dry-run` alone, never by a run): a Hugging Face folder in the layout of a Pythia checkpoint
(`config.json` of a `GPTNeoXForCausalLM`, safetensors weights, a fast tokenizer) holding a tiny
random model, and a JSON-lines file of HH-style preference pairs. Configs without a
`checkpoint_path` (the mini tier's) come back unchanged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

PAIRS = [{"prompt": "\n\nHuman: How do I boil an egg?\n\nAssistant:", "chosen": " Put it in boiling water for eight "
          "minutes.", "rejected": " I don't know."},
         {"prompt": "\n\nHuman: What is the capital of France?\n\nAssistant:", "chosen": " Paris.",
          "rejected": " Lyon, I think."},
         {"prompt": "\n\nHuman: Can you help me write a poem?\n\nAssistant:", "chosen": " Of course: what about?",
          "rejected": " No."}]


def write_checkpoint(root: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    text = [p["prompt"] + p["chosen"] + p["rejected"] for p in PAIRS]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    config = GPTNeoXConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, max_position_embeddings=2048, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    GPTNeoXForCausalLM(config).to(torch.bfloat16).save_pretrained(str(root), safe_serialization=True)
    fast.save_pretrained(str(root))
    return root


def stand_in_data(config: Any, folder: Path) -> Any:
    if not hasattr(config, "checkpoint_path"):
        return config
    changes = {}
    if not (Path(config.checkpoint_path) / "config.json").is_file():
        changes["checkpoint_path"] = str(write_checkpoint(Path(folder) / "pythia-stand-in"))
    if not Path(config.train_data).is_file():
        path = Path(folder) / "hh_train.jsonl"
        path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
        changes["train_data"] = str(path)
    return dataclasses.replace(config, **changes)
