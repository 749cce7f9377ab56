"""The dry run's stand-ins for the full tier (imported by `repro reproduce --dry-run` alone, never by
a run): a tiny CLIP in open_clip's layout (CLIP's own stand-in), a tiny GPT-2 in Hugging Face's
layout with a byte-level BPE tokenizer trained on a few sentences, and tiny ScienceQA and CC-595K
trees in their released layouts (evals/tasks/scienceqa.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from evals.tasks.scienceqa import write_cc595k, write_scienceqa
from reproductions.clip.stand_ins import write_tiny_clip
from reproductions.llava.scienceqa import Config, required_data

TINY_LM = {"n_layer": 1, "n_head": 2, "n_embd": 16}


def write_tiny_gpt2(folder: Path) -> tuple[Path, Path, int]:
    """A randomly initialised tiny GPT-2 (transformers' GPT2LMHeadModel, saved as safetensors) and a
    byte-level BPE tokenizer.json; returns (weights, tokenizer, vocabulary size)."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"])
    tok.train_from_iterator(["###Human: Context: N/A\nQuestion: Which of these is a mammal?",
                             "Options: (A) cat (B) trout###Assistant: A cat has fur. The answer is A.###"], trainer)
    tokenizer = folder / "tokenizer.json"
    tok.save(str(tokenizer))
    vocab = tok.get_vocab_size()
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=1024, bos_token_id=0, eos_token_id=0, n_layer=TINY_LM["n_layer"],
                                    n_head=TINY_LM["n_head"], n_embd=TINY_LM["n_embd"]))
    weights = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in hf.transformer.state_dict().items() if not k.endswith((".attn.bias", ".attn.masked_bias"))},
              str(weights))
    return weights, tokenizer, vocab


def stand_in_data(cfg: Config, folder: Path) -> Config:
    missing = required_data(cfg)
    changes = {}
    if any(m.startswith("CLIP weights") for m in missing):
        config_path, weights = write_tiny_clip(folder / "clip", cfg.image_size)
        changes.update(vision_model=str(config_path), vision_checkpoint=str(weights))
    if any(m.startswith(("GPT-2 weights", "GPT-2 tokenizer")) for m in missing):
        weights, tokenizer, vocab = write_tiny_gpt2(folder / "gpt2")
        changes.update(lm_checkpoint=str(weights), tokenizer=str(tokenizer), vocab_size=vocab, **TINY_LM)
    if any(m.startswith("LLaVA-CC3M") for m in missing):
        changes["pretrain_root"] = str(write_cc595k(folder / "cc595k"))
    if any(m.startswith("ScienceQA") for m in missing):
        changes["data_root"] = str(write_scienceqa(folder / "scienceqa"))
    return dataclasses.replace(cfg, **changes)
