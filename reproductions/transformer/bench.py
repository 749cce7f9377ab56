"""Transformer benchmarks: our GPT's training tokens per second against Hugging Face
transformers' GPT2LMHeadModel of the same shape (built from a GPT2Config, nothing downloaded),
timed in the same process on the same batches."""

from __future__ import annotations

import time

import torch

from reproductions.transformer.gpt import GPT, GPTConfig

SHAPE = dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128)
BATCH, STEPS, WARMUP = 16, 20, 3


def _hf_model() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=SHAPE["vocab_size"], n_positions=SHAPE["block_size"], n_layer=SHAPE["n_layer"],
                     n_head=SHAPE["n_head"], n_embd=SHAPE["n_embd"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def _tokens_per_second(model: torch.nn.Module, loss_fn) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(SHAPE["vocab_size"], (BATCH, SHAPE["block_size"] + 1), generator=g) for _ in range(STEPS)]
    for i, batch in enumerate(batches):
        if i == WARMUP:
            start = time.perf_counter()
        loss = loss_fn(model, batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (STEPS - WARMUP) * BATCH * SHAPE["block_size"] / (time.perf_counter() - start)


def run() -> list[dict]:
    torch.manual_seed(0)
    ours = _tokens_per_second(GPT(GPTConfig(**SHAPE, bias=True)), lambda m, x, y: m(x, y)[1])
    # HF shifts the labels inside: the same 128-token forward pass, 127 predictions per row
    hf = _tokens_per_second(_hf_model(), lambda m, x, y: m(input_ids=x, labels=x).loss)
    shape = f"{SHAPE['n_layer']} layers, d {SHAPE['n_embd']}, {BATCH} x {SHAPE['block_size']} tokens"
    return [{"benchmark": f"GPT training ({shape})", "ours": ours, "baseline": hf,
             "unit": "tokens/s (vs HF GPT2LMHeadModel)", "ratio": ours / hf}]
