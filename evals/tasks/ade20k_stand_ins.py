"""Tiny stand-ins for ControlNet's segmentation full tier, where the real data and weights are absent
(dry runs and tests; never part of a run): an ADE20K-layout tree of random images with blocky label
maps, a CLIP byte-level tokenizer with no merges (every byte its own token), and a randomly
initialised tiny OneFormer for ADE20K's 150 classes, saved by transformers in safetensors with that
tokenizer, in the folder layout the real `shi-labs/oneformer_ade20k_swin_large` has."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evals.tasks.ade20k import CLASSES, NUM_CLASSES


def write_ade20k(root: Path, per_split: int = 3, side: int = 96, seed: int = 0) -> Path:
    """An ADE20K-layout tree (images/<split>/*.jpg, annotations/<split>/*.png) of random images whose
    label maps are 4 x 4 blocks of random classes (0 included); returns `root`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(per_split):
            name = f"{prefix}_{i + 1:08d}"
            blocks = rng.integers(0, NUM_CLASSES + 1, (4, 4)).astype(np.uint8)
            labels = np.kron(blocks, np.ones((side // 4, side // 4 + 8), dtype=np.uint8))   # wider than tall
            Image.fromarray(labels, "L").save(root / "annotations" / split / f"{name}.png")
            pixels = rng.integers(0, 256, (*labels.shape, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(root / "images" / split / f"{name}.jpg", quality=90)
    return root


def clip_tokenizer():
    """transformers' CLIPTokenizer with the byte-level alphabet and no merges (514 ids)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def write_tiny_oneformer(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised OneFormer (a 1-layer Swin backbone of width 16, 8 queries) for ADE20K's
    150 classes, its tokenizer beside it; returns `folder`."""
    import torch
    from transformers import OneFormerConfig, OneFormerForUniversalSegmentation, SwinConfig

    folder.mkdir(parents=True, exist_ok=True)
    tok = clip_tokenizer()
    backbone = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = OneFormerConfig(
        backbone_config=backbone, hidden_dim=32, conv_dim=32, mask_dim=32, num_queries=8, encoder_layers=1,
        decoder_layers=2, dim_feedforward=64, num_attention_heads=2, text_encoder_width=32, text_encoder_num_layers=1,
        text_encoder_vocab_size=len(tok), text_encoder_context_length=77, text_encoder_proj_layers=1,
        text_encoder_n_ctx=4, task_seq_len=77, max_seq_len=77, num_classes=NUM_CLASSES,
        id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        OneFormerForUniversalSegmentation(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
