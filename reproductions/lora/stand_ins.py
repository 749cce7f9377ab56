"""The dry run's stand-ins for the full tier's absent inputs (`repro reproduce lora --tier full
--dry-run`): a tiny GPT-2 in the Hugging Face folder format (config.json, model.safetensors,
tokenizer.json: what `gpt2_weights.load_gpt2` and `e2e.tokenizer` read) and a tiny E2E folder in the
authors' format (train.txt, valid.txt, test.txt). Imported by the dry run and the tests alone,
never by a run: a stand-in decides no number."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from reproductions.lora import e2e

MRS = [
    ("name[The Vaults] | eatType[pub] | priceRange[more than £30] | near[Café Adriatic]",
     ["The Vaults pub near Café Adriatic has a price range of more than £30.",
      "Near Café Adriatic is The Vaults, a pub with prices over £30."]),
    ("name[The Cambridge Blue] | eatType[pub] | food[English] | priceRange[cheap]",
     ["The Cambridge Blue is a cheap pub serving English food.",
      "For cheap English food, try The Cambridge Blue pub."]),
    ("name[The Eagle] | eatType[coffee shop] | customer rating[5 out of 5] | area[riverside]",
     ["The Eagle is a coffee shop by the riverside rated 5 out of 5."]),
]


def write_e2e(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{mr}||{ref}" for mr, refs in MRS for ref in refs]
    for name in e2e.DATA_FILES:
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_gpt2(root: Path, n_layer: int = 2, n_embd: int = 32, n_head: int = 2, n_positions: int = 128) -> Path:
    """A randomly initialised GPT-2 of a tiny shape, with a byte-level BPE trained on the stand-in
    sentences, saved as Hugging Face saves 'gpt2-medium'."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    root.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[e2e.EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([f"{mr}{e2e.SEPARATOR} {ref}" for mr, refs in MRS for ref in refs], trainer)
    tok.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=n_positions, n_layer=n_layer, n_embd=n_embd,
                     n_head=n_head, eos_token_id=tok.token_to_id(e2e.EOS), bos_token_id=tok.token_to_id(e2e.EOS))
    GPT2LMHeadModel(cfg).save_pretrained(str(root), safe_serialization=True)
    return root


def stand_in_data(config: e2e.Config, folder: Path) -> e2e.Config:
    """The config with `model_dir` and `data_root` at stand-ins written under `folder`; nothing
    changes where the real files are present."""
    changes = {}
    if any(not (Path(config.model_dir) / f).is_file() for f in e2e.MODEL_FILES):
        changes["model_dir"] = str(write_gpt2(Path(folder) / "gpt2-stand-in"))
    if any(not (Path(config.data_root) / f).is_file() for f in e2e.DATA_FILES):
        changes["data_root"] = str(write_e2e(Path(folder) / "e2e-stand-in"))
    return dataclasses.replace(config, **changes) if changes else config


__all__ = ["stand_in_data", "write_e2e", "write_gpt2"]
