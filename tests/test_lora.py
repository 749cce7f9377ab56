"""LoRA (arXiv 2106.09685): our layer against PEFT's on identical weights and inputs, against eq. (3)
written out, its initialisation, scaling, merge / unmerge, the held-out part of the corpus, the
pre-training cache and the merge evaluator."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from evals.contract import QuietRun
from evals.tasks import code_corpus, code_domains
from reproductions.common import trained_once as once
from reproductions.lora import finetune, lora, peft_baseline
from reproductions.transformer.gpt import GPT, GPTConfig
from reproductions.transformer.gpt2_weights import load_gpt2

TINY = finetune.Config(n_layer=1, n_head=2, n_embd=32, block_size=32, steps=4, batch_size=2, warmup_steps=1,
                       log_every=2, ft_steps=3, ft_batch_size=2, ft_warmup_steps=1, rank=2)


def _random_lora(d_in=12, d_out=10, r=3, alpha=6.0, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = nn.Linear(d_in, d_out, bias=bias)
    with torch.no_grad():
        base.weight.copy_(torch.randn(d_out, d_in, generator=g))
        if bias:
            base.bias.copy_(torch.randn(d_out, generator=g))
    layer = lora.LoRALinear.from_linear(base, r, alpha)
    with torch.no_grad():  # B != 0, so the low-rank path is exercised
        layer.lora_A.copy_(torch.randn(r, d_in, generator=g))
        layer.lora_B.copy_(torch.randn(d_out, r, generator=g))
    return base, layer


def test_forward_is_eq3_written_out():
    base, layer = _random_lora()
    x = torch.randn(4, 5, 12)
    W0, b, A, B = base.weight, base.bias, layer.lora_A, layer.lora_B
    expected = torch.einsum("oi,bti->bto", W0, x) + b + (6.0 / 3) * torch.einsum("or,ri,bti->bto", B, A, x)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_against_peft_forward_and_gradients(bias):
    """PEFT's LoRA Linear on the same W_0, b, A, B and inputs: the same outputs and the same
    gradients of A and B (and of the input)."""
    from peft import LoraConfig, inject_adapter_in_model

    base, ours = _random_lora(bias=bias)
    holder = nn.Module()
    holder.proj = nn.Linear(12, 10, bias=bias)
    holder.proj.load_state_dict(base.state_dict())
    inject_adapter_in_model(LoraConfig(r=3, lora_alpha=6.0, target_modules=["proj"], lora_dropout=0.0), holder)
    theirs = holder.proj
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    x1 = torch.randn(3, 7, 12, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = ours(x1), theirs(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(ours.lora_A.grad, theirs.lora_A["default"].weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.lora_B.grad, theirs.lora_B["default"].weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    assert ours.weight.grad is None and not ours.weight.requires_grad  # W_0 frozen
    # merged, both are the same plain matrix W_0 + (alpha / r) B A
    theirs.merge()
    ours.merge()
    torch.testing.assert_close(ours.weight, theirs.base_layer.weight, rtol=1e-6, atol=1e-6)


def test_scaling_is_alpha_over_r():
    base, layer = _random_lora(r=3, alpha=6.0)
    torch.testing.assert_close(layer.delta_weight(), 2.0 * layer.lora_B @ layer.lora_A)
    x = torch.randn(2, 12)
    doubled = lora.LoRALinear.from_linear(base, 3, 12.0)
    with torch.no_grad():
        doubled.lora_A.copy_(layer.lora_A)
        doubled.lora_B.copy_(layer.lora_B)
    torch.testing.assert_close(doubled(x) - base(x), 2 * (layer(x) - base(x)), rtol=1e-5, atol=1e-5)
    assert lora.lora_parameter_count(12, 10, 3) == layer.lora_A.numel() + layer.lora_B.numel() == 3 * 22


def test_initialisation_b_zero_adapted_model_equals_base():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=256, block_size=16, n_layer=2, n_head=2, n_embd=16))
    x = torch.randint(256, (2, 16))
    before = gpt(x)[0]
    names = lora.inject(gpt, r=4, alpha=8.0, generator=torch.Generator().manual_seed(1))
    assert names == ["blocks.0.attn.w_q", "blocks.0.attn.w_v", "blocks.1.attn.w_q", "blocks.1.attn.w_v"]
    assert torch.equal(gpt(x)[0], before)  # B = 0: exactly the pre-trained model at step 0
    for m in lora.adapters(gpt):
        assert torch.count_nonzero(m.lora_B) == 0 and torch.count_nonzero(m.lora_A) == m.lora_A.numel()
        bound = 1 / math.sqrt(m.in_features)  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(k), 1/sqrt(k))
        assert m.lora_A.abs().max() <= bound
    trainable = {n for n, p in gpt.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{ab}" for n in names for ab in "AB"}
    assert sum(p.numel() for p in gpt.parameters() if p.requires_grad) == 4 * 4 * (16 + 16)


def test_merge_unmerge_round_trip_and_plain_copy():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=256, block_size=16, n_layer=2, n_head=2, n_embd=16))
    lora.inject(gpt, r=2, alpha=4.0)
    w0 = {n: m.weight.detach().clone() for n, m in gpt.named_modules() if isinstance(m, lora.LoRALinear)}
    for m in lora.adapters(gpt):
        nn.init.normal_(m.lora_B, std=0.5)
    x = torch.randint(256, (2, 16))
    unmerged = gpt(x)[0]
    lora.merge(gpt)
    assert all(m.merged for m in lora.adapters(gpt))
    merged = gpt(x)[0]
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    lora.merge(gpt)  # merging twice adds BA once
    torch.testing.assert_close(gpt(x)[0], unmerged, rtol=1e-5, atol=1e-5)
    lora.unmerge(gpt)
    for n, m in gpt.named_modules():
        if isinstance(m, lora.LoRALinear):
            torch.testing.assert_close(m.weight, w0[n], rtol=0, atol=1e-6)
    torch.testing.assert_close(gpt(x)[0], unmerged, rtol=1e-6, atol=1e-6)
    plain = lora.merged_copy(gpt)
    assert not lora.adapters(plain) and type(plain.blocks[0].attn.w_q) is nn.Linear
    torch.testing.assert_close(plain(x)[0], unmerged, rtol=1e-5, atol=1e-5)
    assert not any(m.merged for m in lora.adapters(gpt))  # the copy left the model as it was


def test_domains_partition_the_corpus():
    gui, rest = finetune.GUI, "!" + finetune.GUI
    files = code_corpus.corpus_files()
    inside = code_domains.domain_files(gui)
    outside = code_domains.domain_files(rest)
    assert sorted(inside + outside) == sorted(files) and not set(inside) & set(outside)
    assert all(f.parts[0] in {"idlelib", "tkinter", "turtledemo"} for f in inside)
    assert code_domains.load_split("validation", "", 10) == code_corpus.load_split("validation", 10)
    gui_val = code_domains.load_split("validation", gui, 25)
    assert b"tkinter" in gui_val and len(gui_val) > 131_072
    with pytest.raises(ValueError):
        code_domains.parse("!")


def test_pretraining_cache_is_bit_identical_and_leaves_the_rng_alone():
    cfg = TINY
    logs_a, logs_b = [], []
    torch.manual_seed(5)
    expected_rng = torch.get_rng_state()
    once._CACHE.clear()
    a = finetune.pretrained(cfg, 7, torch.device("cpu"), lambda step, **v: logs_a.append((step, v)))
    assert torch.equal(torch.get_rng_state(), expected_rng)
    b = finetune.pretrained(cfg, 7, torch.device("cpu"), lambda step, **v: logs_b.append((step, v)))  # cached
    once._CACHE.clear()
    c = finetune.pretrained(cfg, 7, torch.device("cpu"), lambda step, **v: None)  # afresh
    assert logs_a == logs_b and logs_a
    for k in a:
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k])
    other = finetune.pretrained(cfg, 8, torch.device("cpu"), lambda step, **v: None)
    assert not torch.equal(other["wte.weight"], a["wte.weight"])


@pytest.mark.parametrize("module", [finetune, peft_baseline])
def test_train_save_load_and_merge_evaluator(module, tmp_path):
    from evals.evaluators import derived_metrics
    from evals.evaluators.lora_merge import LoraMergeOptions, lora_merge

    model = module.train(TINY, QuietRun(1))
    assert model.trainable_parameters() == 1 * 2 * 2 * (32 + 32)
    assert model.base_parameters() == finetune.build(dataclasses.replace(TINY, method="full")).num_parameters()
    path = tmp_path / "final.safetensors"
    model.save(path)
    loaded = module.build(TINY).load(path)
    x = torch.randint(256, (2, 32))
    torch.testing.assert_close(loaded(x)[0], model(x)[0], rtol=0, atol=0)
    result = lora_merge(model, TINY, LoraMergeOptions(tokens=256, batch_size=4, latency_repeats=2, warmup=0))
    m = result.metrics
    assert m["trainable_ratio"] == m["base_parameters"] / m["trainable_parameters"]
    assert m["merged_max_abs_diff"] < 1e-5 and m["plain_max_abs_diff"] < 1e-5 and m["roundtrip_max_abs_diff"] < 1e-5
    assert derived_metrics(result) == pytest.approx(m)


def test_peft_and_ours_train_alike_from_the_same_start():
    """Both arms start from the same pre-trained weights and, with B = 0, from the same function."""
    once._CACHE.clear()
    ours = finetune.train(dataclasses.replace(TINY, ft_steps=0), QuietRun(1))
    theirs = peft_baseline.train(dataclasses.replace(TINY, ft_steps=0), QuietRun(1))
    x = torch.randint(256, (2, 32))
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=0, atol=0)  # B = 0 in both: the pre-trained model


# -- the full tier: GPT-2 Medium on E2E, on the dry run's stand-ins ------------------------------
@pytest.fixture(scope="module")
def e2e_stand_in(tmp_path_factory):
    from reproductions.lora import e2e, stand_ins

    cfg = e2e.Config(model_dir=str(tmp_path_factory.mktemp("absent") / "gpt2"), data_root="/nonexistent/e2e")
    assert len(e2e.required_data(cfg)) == 6  # each missing file named
    cfg = stand_ins.stand_in_data(cfg, tmp_path_factory.mktemp("stand_in"))
    assert e2e.required_data(cfg) == []
    return dataclasses.replace(cfg, beam_size=3, max_new_tokens=6)


def test_converted_gpt2_gives_hugging_faces_logits(e2e_stand_in):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(e2e_stand_in.model_dir).eval()
    ours = load_gpt2(e2e_stand_in.model_dir).eval()
    x = torch.randint(hf.config.vocab_size, (2, 24))
    torch.testing.assert_close(ours(x)[0], hf(x).logits, rtol=1e-5, atol=1e-5)


def test_e2e_data_masks_all_but_the_reference(e2e_stand_in):
    from reproductions.lora import e2e

    tok = e2e.tokenizer(e2e_stand_in.model_dir)
    pairs = e2e.read_split(e2e_stand_in.data_root, "train")
    ids, start = e2e.encode_example(tok, *pairs[0], max_len=512)
    x, y = e2e.collate([(ids, start), e2e.encode_example(tok, *pairs[1], max_len=512)], pad=0)
    assert tok.decode(ids[start:-1]).strip() == pairs[0][1] and ids[-1] == tok.token_to_id(e2e.EOS)
    assert (y[0, : start - 1] == -100).all() and y[0, start - 1: len(ids) - 1].tolist() == ids[start:]
    groups = e2e.grouped(e2e.read_split(e2e_stand_in.data_root, "test"))
    assert [len(refs) for _, refs in groups] == [2, 2, 1]


def test_beam_search_of_one_is_greedy_and_bans_repeated_ngrams(e2e_stand_in):
    from reproductions.lora import e2e

    gpt = load_gpt2(e2e_stand_in.model_dir).eval()
    prompt = [5, 9, 13]
    out = e2e.beam_search(gpt, prompt, eos=10_000, beam=1, max_new=8, no_repeat_ngram=0)
    seq = list(prompt)
    for _ in range(8):
        seq.append(int(gpt(torch.tensor([seq]))[0][0, -1].argmax()))
    assert out == seq[len(prompt):]
    assert e2e._banned([1, 2, 3, 1, 2], 3) == {3} and e2e._banned([1, 2, 3], 4) == set()
    banned = e2e.beam_search(gpt, prompt, eos=10_000, beam=2, max_new=8, no_repeat_ngram=2)
    full = prompt + banned
    bigrams = list(zip(full, full[1:]))
    assert len(bigrams) == len(set(bigrams))


def test_full_tier_dry_run_step_and_bleu_on_stand_ins(e2e_stand_in):
    from evals.contract import DataToText
    from evals.evaluators import derived_metrics
    from evals.evaluators.nlg_bleu import NLGBLEUOptions, nlg_bleu
    from reproductions.lora import e2e

    model = e2e.build(e2e_stand_in)
    assert isinstance(model, DataToText) and model.trainable_parameters() == 2 * 2 * 4 * (32 + 32)
    out = e2e.dry_run_step(model, e2e_stand_in)
    assert math.isfinite(out["loss"])
    result = nlg_bleu(model, e2e_stand_in, NLGBLEUOptions(inputs=2))
    assert result.protocol["inputs"] == 2 and result.protocol["references"] == 4
    assert derived_metrics(result)["bleu"] == pytest.approx(result.metrics["bleu"])


def test_nlg_bleu_uses_every_reference():
    from evals.evaluators.nlg_bleu import NLGBLEUOptions, nlg_bleu

    class Echo:  # writes the second reference of each input: perfect against all, poor against the first
        def held_out_references(self):
            return [("a", ["the cat sat on the mat today", "a dog ran in the park quickly"]),
                    ("b", ["one two three four five six", "seven eight nine ten eleven twelve"])]

        def generate_texts(self, sources):
            return {"a": ["a dog ran in the park quickly"], "b": ["seven eight nine ten eleven twelve"]}[sources[0]] + \
                (["seven eight nine ten eleven twelve"] if len(sources) > 1 else [])

    assert nlg_bleu(Echo(), None, NLGBLEUOptions()).metrics["bleu"] == pytest.approx(100.0)
