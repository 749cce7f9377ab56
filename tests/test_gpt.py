"""The GPT backbone: attention against independent references, the whole model against Hugging
Face's GPT-2 with the same weights, KV-cache generation against recomputation, extension points."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reproductions.transformer import lm
from reproductions.transformer.gpt import GPT, GPTConfig, LearnedPositions, NoPositions, SinusoidalPositions
from reproductions.transformer.layers import MultiHeadAttention, causal_mask, naive_attention, sdpa_attention

CFG = GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32)


def test_naive_and_sdpa_attention_agree_with_masks():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 8)
    mask = torch.rand(2, 1, 1, 9) > 0.3
    mask[..., 0] = True
    for kw in ({}, {"mask": mask}, {"causal": True}, {"causal": True, "mask": mask}):
        torch.testing.assert_close(naive_attention(q, k, v, **kw), sdpa_attention(q, k, v, **kw), atol=1e-5, rtol=1e-5)
    # bottom-right causal alignment: the last query sees every key, the first sees keys 0..4
    m = causal_mask(5, 9)
    assert m[-1].all() and m[0].sum() == 5 and not m[0, 5:].any()


def test_multi_head_attention_equals_torch_reference():
    torch.manual_seed(0)
    ours = MultiHeadAttention(16, 4, naive_attention)
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.w_q.weight, ours.w_k.weight, ours.w_v.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.w_q.bias, ours.w_k.bias, ours.w_v.bias]))
        ref.out_proj.weight.copy_(ours.w_o.weight)
        ref.out_proj.bias.copy_(ours.w_o.bias)
    x = torch.randn(3, 7, 16)
    expected = ref(x, x, x, attn_mask=~causal_mask(7, 7), need_weights=False)[0]
    torch.testing.assert_close(ours(x, causal=True), expected, atol=1e-5, rtol=1e-5)


def test_gpt_equals_huggingface_gpt2_with_the_same_weights():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, bias=True)
    torch.manual_seed(0)
    ours = GPT(cfg).eval()
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                    activation_function="gelu", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).eval()
    sd = {"transformer.wte.weight": ours.wte.weight, "transformer.wpe.weight": ours.position.wpe.weight,
          "transformer.ln_f.weight": ours.ln_f.weight, "transformer.ln_f.bias": ours.ln_f.bias}
    for i, b in enumerate(ours.blocks):
        p = f"transformer.h.{i}."
        a = b.attn
        sd |= {p + "ln_1.weight": b.ln_1.weight, p + "ln_1.bias": b.ln_1.bias, p + "ln_2.weight": b.ln_2.weight,
               p + "ln_2.bias": b.ln_2.bias,
               # GPT-2's Conv1D stores weights as (in, out)
               p + "attn.c_attn.weight": torch.cat([a.w_q.weight, a.w_k.weight, a.w_v.weight]).t(),
               p + "attn.c_attn.bias": torch.cat([a.w_q.bias, a.w_k.bias, a.w_v.bias]),
               p + "attn.c_proj.weight": a.w_o.weight.t(), p + "attn.c_proj.bias": a.w_o.bias,
               p + "mlp.c_fc.weight": b.ffn.w_1.weight.t(), p + "mlp.c_fc.bias": b.ffn.w_1.bias,
               p + "mlp.c_proj.weight": b.ffn.w_2.weight.t(), p + "mlp.c_proj.bias": b.ffn.w_2.bias}
    hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    hf.tie_weights()
    idx = torch.randint(50, (2, 16))
    logits, loss = ours(idx, idx)
    torch.testing.assert_close(logits, hf(idx).logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1), idx.flatten()))


@pytest.mark.parametrize("scheme", [LearnedPositions, SinusoidalPositions, lambda cfg: NoPositions()])
def test_kv_cache_generation_equals_recomputation(scheme):
    torch.manual_seed(1)
    model = GPT(CFG, position=scheme(CFG)).eval()
    prompt = torch.randint(50, (2, 5))
    cached = model.generate(prompt, 20, use_cache=True)
    full = model.generate(prompt, 20, use_cache=False)
    assert torch.equal(cached, full)
    # and the logits of the last step, incrementally and at once
    caches = [{} for _ in model.blocks]
    model(cached[:, :-1], caches=caches)
    step_logits = model(cached[:, -1:], caches=caches)[0][:, -1]
    torch.testing.assert_close(step_logits, model(cached)[0][:, -1], atol=1e-5, rtol=1e-5)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(model.generate(prompt, 10, temperature=1.0, top_k=10, generator=g1),
                       model.generate(prompt, 10, temperature=1.0, top_k=10, generator=g2, use_cache=False))


def test_generation_refuses_to_run_past_the_block():
    model = GPT(CFG).eval()
    with pytest.raises(ValueError, match="block_size"):
        model.generate(torch.zeros(1, 30, dtype=torch.long), 5)


def test_extension_points_are_used():
    calls = {"attend": 0, "linear": 0}

    def attend(q, k, v, mask=None, causal=False):
        calls["attend"] += 1
        return sdpa_attention(q, k, v, mask=mask, causal=causal)

    def linear(i, o, bias):
        calls["linear"] += 1
        return nn.Linear(i, o, bias)

    class Doubler(nn.Module):
        def forward(self, x):
            return 2 * x

    model = GPT(CFG, attend=attend, linear=linear, ffn=lambda cfg, lin: Doubler())
    model(torch.zeros(1, 4, dtype=torch.long))
    assert calls == {"attend": CFG.n_layer, "linear": 4 * CFG.n_layer}  # q, k, v, o; the FFN was replaced
    assert all(isinstance(b.ffn, Doubler) for b in model.blocks)


def test_language_model_save_load_and_schedule(tmp_path):
    cfg = lm.Config(n_layer=1, n_head=2, n_embd=16, block_size=16, steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    torch.manual_seed(0)
    a = lm.build(cfg)
    a.save(tmp_path / "m.safetensors")
    torch.manual_seed(1)
    b = lm.build(cfg).load(tmp_path / "m.safetensors")
    x = torch.randint(256, (1, 16))
    torch.testing.assert_close(a(x)[0], b(x)[0])
    assert b.gpt.lm_head.weight.data_ptr() == b.gpt.wte.weight.data_ptr()  # still tied after loading
    assert lm.lr_at(0, cfg) == pytest.approx(1e-4) and lm.lr_at(9, cfg) == pytest.approx(1e-3)
    assert lm.lr_at(100, cfg) == pytest.approx(1e-4) and 1e-4 < lm.lr_at(50, cfg) < 1e-3
    with pytest.raises(ValueError, match="position"):
        lm.build(lm.Config(position="rotary"))
