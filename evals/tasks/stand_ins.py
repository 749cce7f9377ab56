"""Tiny stand-ins of the image datasets and FineWeb's token shards on disk, for `repro reproduce --dry-run` where the real
data is absent (evals/dry_run.py): the same on-disk format as the real data, so that the real
loaders of `image_loaders` read them, the model sees images of the tier's resolution, and the
evaluators run end to end on a machine without ImageNet.

- `imagenet`: `<root>/train/<class>/*.JPEG` and `<root>/val/<class>/*.JPEG`, as torchvision's
  `ImageFolder` reads ImageNet-1k (two classes of two random images each);
- `cifar10`: `<root>/cifar-10-batches-py/`, CIFAR-10's python-version batches of random images;
- `image_data(config, folder)`: a paper's `stand_in_data` hook for configs naming a `dataset`
  and its `data_root`: writes the dataset's stand-in under `folder` and returns the config with
  `data_root` pointing at it (configs of the generated datasets come back unchanged);
- `fineweb_data(config, folder)`: the same for configs reading FineWeb's GPT-2 token shards from
  `data_root` (one train and one validation shard of random token ids, modded-nanogpt's format);
- `write_causal_lm(root, texts, architecture, ...)`: a Hugging Face checkpoint folder of a tiny
  random causal LM (`config.json`, safetensors weights, a byte-level BPE tokenizer trained on
  `texts`), which transformers and lm-eval load as they would the real one;
- `checkpoint_and_jsonl(config, folder, ...)`: a paper's `stand_in_data` hook for configs naming a
  `checkpoint_path` and a JSON-lines `train_data`: writes whichever is missing.

Nothing here is part of a run: training and evaluation read the real data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evals.tasks import fineweb
from evals.tasks.image_loaders import SPLITS, missing_data

STAND_IN_CLASSES = 2
STAND_IN_PER_CLASS = 2
STAND_IN_SIDE = 64  # pixels; the loaders resize to the tier's resolution as they do ImageNet's


def write_imagenet(root: Path, classes: int = STAND_IN_CLASSES, per_class: int = STAND_IN_PER_CLASS,
                   side: int = STAND_IN_SIDE, seed: int = 0) -> Path:
    """An ImageNet-layout tree of random RGB JPEGs at `root`; returns `root`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in SPLITS["imagenet"]:
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"stand_in_{c}_{i}.JPEG", quality=90)
    return root


def write_cifar10(root: Path, per_split: int = 20, seed: int = 0) -> Path:
    """CIFAR-10's python-version batches (`<root>/cifar-10-batches-py/data_batch_1..5`, `test_batch`,
    `batches.meta`, pickled dicts of uint8 rows of 3 x 32 x 32 pixels and labels) of random images;
    returns `root`. torchvision checks these files against the published files' md5 sums: the
    stand-in's sums are registered with torchvision's `CIFAR10` in this process (the dry run's) alone."""
    import hashlib
    import pickle

    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(seed)
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: dict) -> list[str]:
        (folder / name).write_bytes(pickle.dumps(data))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    def batch(n: int) -> dict:
        return {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8), "labels": [i % 10 for i in range(n)]}

    CIFAR10.train_list = [write(name, batch(per_split // 5 or 1)) for name, _ in CIFAR10.train_list[:5]]
    CIFAR10.test_list = [write(name, batch(per_split)) for name, _ in CIFAR10.test_list]
    name, md5 = write(CIFAR10.meta["filename"], {CIFAR10.meta["key"]: [f"class_{i}" for i in range(10)]})
    CIFAR10.meta = {**CIFAR10.meta, "md5": md5}
    return root


WRITERS = {"imagenet": write_imagenet, "cifar10": write_cifar10}


def image_data(config: Any, folder: Path) -> Any:
    """`config` with its `data_root` at a stand-in of its `dataset` written under `folder`, where
    the real one is missing and a stand-in of it can be written; else `config` itself."""
    name, root = getattr(config, "dataset", None), getattr(config, "data_root", None)
    if name not in WRITERS or not missing_data(name, root):
        return config
    return dataclasses.replace(config, data_root=str(WRITERS[name](Path(folder) / name)))


FINEWEB_STAND_IN_TOKENS = 1 << 15


def fineweb_data(config: Any, folder: Path) -> Any:
    """`config` with `data_root` at stand-in FineWeb shards written under `folder`, where the
    configured root lacks its shards; else `config` itself."""
    if not fineweb.missing(config.data_root):
        return config
    root = write_fineweb(Path(folder) / "fineweb10B", FINEWEB_STAND_IN_TOKENS + 1, FINEWEB_STAND_IN_TOKENS + 1)
    return dataclasses.replace(config, data_root=str(root))


def write_fineweb(root: Path, train_tokens: int, val_tokens: int) -> Path:
    """One train and one validation shard of random GPT-2 token ids under `root`, in the shards' format."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("fineweb_train_000001.bin", train_tokens), ("fineweb_val_000000.bin", val_tokens)):
        fineweb.write_shard(root / name, rng.integers(fineweb.VOCAB_SIZE, size=n, dtype=np.uint16))
    return root


def write_causal_lm(root: Path, texts: list[str], architecture: str, vocab_size: int, **fields: Any) -> Path:
    """A tiny random `<architecture>ForCausalLM` of transformers (seed 0, bfloat16, safetensors) with
    a byte-level BPE tokenizer of `vocab_size` trained on `texts` ('<unk>' 0, '<|endoftext|>' 1, also
    the padding), saved under `root`; `fields` go to `<architecture>Config`."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")
    config = getattr(transformers, f"{architecture}Config")(vocab_size=tok.get_vocab_size(), max_position_embeddings=2048,
                                                            eos_token_id=1, pad_token_id=1, **fields)
    torch.manual_seed(0)
    model = getattr(transformers, f"{architecture}ForCausalLM")(config)
    model.to(torch.bfloat16).save_pretrained(str(root), safe_serialization=True)
    fast.save_pretrained(str(root))
    return root


def checkpoint_and_jsonl(config: Any, folder: Path, write_checkpoint: Callable[[Path], Path], checkpoint_name: str,
                         data_name: str, rows: list[dict]) -> Any:
    """`config` with `checkpoint_path` at `write_checkpoint(folder / checkpoint_name)` where it holds
    no `config.json`, and `train_data` at `rows` written as JSON lines to `folder / data_name` where
    that file is missing; a config without a `checkpoint_path` (a mini tier's) comes back unchanged."""
    if not hasattr(config, "checkpoint_path"):
        return config
    changes = {}
    if not (Path(config.checkpoint_path) / "config.json").is_file():
        changes["checkpoint_path"] = str(write_checkpoint(Path(folder) / checkpoint_name))
    if not Path(config.train_data).is_file():
        path = Path(folder) / data_name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        changes["train_data"] = str(path)
    return dataclasses.replace(config, **changes)
