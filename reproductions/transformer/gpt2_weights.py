"""GPT-2's released weights (a local Hugging Face folder or `model.safetensors`, never unpickled) in
the project's GPT (`gpt.py`), for the full tiers that start from them (LoRA's E2E, LLaVA's
ScienceQA).

- GPT-2's MLP uses GELU in its tanh approximation ('gelu_new'): `gpt2_ffn`, plugged in through the
  GPT's `ffn` extension point;
- its Conv1D layers store W as (in, out), so each is transposed into nn.Linear's (out, in), and its
  fused `c_attn` is split into W_q, W_k, W_v: `gpt2_state_dict`;
- its input and output embeddings are tied, as in the GPT.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from reproductions.transformer.gpt import GPT, GPTConfig
from reproductions.transformer.layers import FeedForward


def gpt2_ffn(cfg: GPTConfig, linear=nn.Linear) -> nn.Module:
    """GPT-2's MLP: GELU in its tanh approximation ('gelu_new')."""
    return FeedForward(cfg.n_embd, cfg.d_ff, partial(F.gelu, approximate="tanh"), linear, cfg.bias, cfg.dropout)


def gpt2_config(model_dir: Path, dropout: float = 0.0) -> GPTConfig:
    """The GPT's shape from a Hugging Face GPT-2 folder's `config.json`."""
    hf = json.loads((Path(model_dir) / "config.json").read_text())
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=hf["n_embd"], ffn_hidden=hf.get("n_inner") or 0, dropout=dropout,
                     bias=True)


def gpt2_state_dict(hf: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 tensors -> the GPT's state dict."""
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    out = {"wte.weight": hf["wte.weight"], "position.wpe.weight": hf["wpe.weight"],
           "ln_f.weight": hf["ln_f.weight"], "ln_f.bias": hf["ln_f.bias"]}
    for i in range(n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        for ln in ("ln_1", "ln_2"):
            out[b + ln + ".weight"], out[b + ln + ".bias"] = hf[h + ln + ".weight"], hf[h + ln + ".bias"]
        qkv_w, qkv_b = hf[h + "attn.c_attn.weight"], hf[h + "attn.c_attn.bias"]
        for name, w, bias in zip(("w_q", "w_k", "w_v"), qkv_w.chunk(3, dim=1), qkv_b.chunk(3)):
            out[f"{b}attn.{name}.weight"], out[f"{b}attn.{name}.bias"] = w.t().contiguous(), bias
        for src, dst in (("attn.c_proj", "attn.w_o"), ("mlp.c_fc", "ffn.w_1"), ("mlp.c_proj", "ffn.w_2")):
            out[f"{b}{dst}.weight"], out[f"{b}{dst}.bias"] = hf[h + src + ".weight"].t().contiguous(), hf[h + src + ".bias"]
    out["lm_head.weight"] = out["wte.weight"]  # tied
    return out


def load_gpt2(model_dir: str | Path, dropout: float = 0.0) -> GPT:
    """The GPT holding the weights of the GPT-2 folder `model_dir` (config.json, model.safetensors)."""
    from safetensors.torch import load_file

    cfg = gpt2_config(Path(model_dir), dropout)
    gpt = GPT(cfg, ffn=gpt2_ffn)
    gpt.load_state_dict(gpt2_state_dict(load_file(str(Path(model_dir) / "model.safetensors")), cfg.n_layer))
    return gpt
