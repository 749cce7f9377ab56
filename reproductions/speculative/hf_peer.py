"""The peer: Hugging Face's assisted generation (transformers' own speculative decoding) with the
same two models, converted to its GPT-2.

The project's GPT is GPT-2's architecture without biases (pre-LN blocks, learned positions, tied
embeddings, exact-erf GELU), so it maps onto `GPT2LMHeadModel` exactly: queries, keys and values go
into GPT-2's fused `c_attn` (a Conv1D, hence the transposes), every bias is zero, and
`activation_function="gelu"` is the exact GELU (GPT-2's default "gelu_new" is the tanh
approximation). The converted model's logits equal ours to float rounding (tests/test_speculative.py).
"""

from __future__ import annotations

import torch

from reproductions.transformer.gpt import GPT


def to_gpt2(gpt: GPT):
    """`gpt` as a transformers `GPT2LMHeadModel` with the same weights (zero biases)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = gpt.cfg
    if c.bias:
        raise ValueError("only the bias-free GPT is converted (GPTConfig.bias=False, the default)")
    hf_cfg = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                        n_head=c.n_head, n_inner=c.d_ff, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True, bos_token_id=None,
                        eos_token_id=None, pad_token_id=0)
    model = GPT2LMHeadModel(hf_cfg)
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    sd["transformer.wte.weight"] = gpt.wte.weight
    sd["transformer.wpe.weight"] = gpt.position.wpe.weight
    for i, b in enumerate(gpt.blocks):
        h = f"transformer.h.{i}."
        sd[h + "ln_1.weight"], sd[h + "ln_2.weight"] = b.ln_1.weight, b.ln_2.weight
        sd[h + "attn.c_attn.weight"] = torch.cat([b.attn.w_q.weight, b.attn.w_k.weight, b.attn.w_v.weight]).T
        sd[h + "attn.c_proj.weight"] = b.attn.w_o.weight.T
        sd[h + "mlp.c_fc.weight"], sd[h + "mlp.c_proj.weight"] = b.ffn.w_1.weight.T, b.ffn.w_2.weight.T
    sd["transformer.ln_f.weight"] = gpt.ln_f.weight
    sd["lm_head.weight"] = gpt.wte.weight
    sd = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    missing = [k for k in model.state_dict() if k not in sd]
    if missing:
        raise KeyError(f"GPT-2 parameters not mapped: {missing[:5]}")
    model.load_state_dict(sd, strict=False)
    return model.eval()


@torch.no_grad()
def assisted_generate(target_hf, draft_hf, prompt: list[int], max_new_tokens: int, gamma: int) -> list[int]:
    """Hugging Face's assisted generation, greedy, with a constant `gamma` guesses per pass (its
    default schedule adapts gamma and stops drafting below a confidence threshold; both are turned
    off so that it runs the paper's Algorithm 1 as ours does)."""
    ids = torch.tensor([prompt])
    draft_hf.generation_config.num_assistant_tokens = gamma
    draft_hf.generation_config.num_assistant_tokens_schedule = "constant"
    draft_hf.generation_config.assistant_confidence_threshold = 0.0
    out = target_hf.generate(ids, attention_mask=torch.ones_like(ids), assistant_model=draft_hf, do_sample=False,
                             max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@torch.no_grad()
def hf_greedy(target_hf, prompt: list[int], max_new_tokens: int) -> list[int]:
    """The target alone through transformers' generate (greedy, its own KV cache)."""
    ids = torch.tensor([prompt])
    out = target_hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                             min_new_tokens=max_new_tokens, pad_token_id=0)
    return out[0, len(prompt):].tolist()
