"""A tiny stand-in of the full tier's inputs for `repro reproduce speculative --tier full --dry-run`
on a machine without them (evals/dry_run.py): two randomly initialised T5 models in Hugging Face
format (a 2-layer "target" and a 1-layer "draft", d_model 32) with a small word-level tokenizer
that has T5's special tokens, and a source file of a few English sentences, so that the real
loaders, the encoder-decoder cache and its rollback, the measurements and the evaluator all run.
The measurement budget shrinks to seconds. Nothing here is part of a run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

SENTENCES = ["The cat sat on the mat .", "Speculative decoding keeps the output distribution .",
             "A small model guesses and a large model checks .", "The house is green and the garden is large ."]


def _tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for s in SENTENCES for w in (s.lower().split() + s.split())})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return len(vocab)


def stand_in_data(config, folder: Path):
    """`config` with both checkpoints and the sources at stand-ins written under `folder`, and a
    measurement budget of seconds (unchanged where the configured inputs are all there)."""
    from reproductions.speculative.full import required_data

    if not required_data(config):
        return config
    from transformers import T5Config, T5ForConditionalGeneration

    folder = Path(folder)
    torch.manual_seed(0)
    for name, layers in (("t5-target", 2), ("t5-draft", 1)):
        path = folder / name
        vocab = _tokenizer(path)
        cfg = T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=layers, num_heads=4,
                       decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
        T5ForConditionalGeneration(cfg).save_pretrained(path)
    sources = folder / "sources.en"
    sources.write_text("\n".join(SENTENCES) + "\n")
    return dataclasses.replace(config, target_checkpoint=str(folder / "t5-target"),
                               draft_checkpoint=str(folder / "t5-draft"), sources=str(sources), dtype="float32",
                               gammas=[1, 3], prompts=2, new_tokens=8, draws=20, draw_prefixes=1, draw_gamma=2,
                               cost_repeats=2)
