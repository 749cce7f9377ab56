"""FlashAttention: tiled forward and recomputing backward equal naive attention (fp32, 1e-5;
float64 gradcheck), the memory ledger, and the tiled kernel inside the GPT. The Triton kernels
are tested in `test_flash_attention_triton.py`."""

import dataclasses

import pytest
import torch

from reproductions.flash_attention import measure
from reproductions.flash_attention.flash import flash_attention
from reproductions.transformer.gpt import GPT, GPTConfig
from reproductions.transformer.layers import naive_attention

SHAPES = [(1, 1, 1, 1, 16, 8, 8), (2, 3, 37, 37, 16, 16, 8), (1, 2, 50, 83, 32, 32, 16), (2, 2, 64, 64, 64, 128, 128),
          (1, 4, 129, 200, 8, 64, 32)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("b,h,n,m,d,bq,bk", SHAPES)
def test_tiled_attention_equals_naive(b, h, n, m, d, bq, bk, causal):
    g = torch.Generator().manual_seed(n * m + causal)
    q, k, v = (torch.randn(b, h, t, d, generator=g, requires_grad=True) for t in (n, m, m))
    grad = torch.randn(b, h, n, d, generator=g)
    ours = flash_attention(q, k, v, causal=causal, block_q=bq, block_k=bk)
    ref = naive_attention(q, k, v, causal=causal)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for a, r in zip(torch.autograd.grad(ours, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)


def test_backward_passes_gradcheck_in_float64():
    q, k, v = (torch.randn(1, 1, t, 4, dtype=torch.float64, requires_grad=True) for t in (5, 7, 7))
    for causal in (False, True):
        assert torch.autograd.gradcheck(lambda q, k, v: flash_attention(q, k, v, causal=causal, block_q=2, block_k=3),
                                        (q, k, v))


def test_memory_ledger_counts_live_storages():
    mode = measure.PeakMemory()
    with mode:
        a = torch.ones(1000)          # 4,000 bytes
        b = a * 2                     # + 4,000
        del a, b
        c = torch.zeros(250)          # 1,000, after both are freed
    assert mode.peak == 8000 and mode.live == 1000 and c.numel() == 250
    cfg = measure.Config(head_dim=16, block=32)
    naive = [measure.peak_extra_bytes("naive", n, cfg, 0) for n in (128, 256)]
    tiled = [measure.peak_extra_bytes("tiled", n, cfg, 0) for n in (128, 256)]
    assert naive[1] / naive[0] > 3.5 and tiled[1] / tiled[0] < 2.5  # quadratic vs linear
    assert naive[0] >= 2 * 128 * 128 * 4  # scores and probabilities, kept for backward


def test_gpt_with_tiled_attention_equals_sdpa():
    cfg = GPTConfig(vocab_size=30, block_size=40, n_layer=2, n_head=2, n_embd=32)
    torch.manual_seed(0)
    ref = GPT(cfg).eval()
    ours = GPT(cfg, attend=lambda q, k, v, mask=None, causal=False: flash_attention(q, k, v, causal=causal,
                                                                                       block_q=8, block_k=8)).eval()
    ours.load_state_dict(ref.state_dict())
    idx = torch.randint(30, (2, 40))
    torch.testing.assert_close(ours(idx)[0], ref(idx)[0], atol=1e-5, rtol=1e-5)
    prompt = idx[:, :6]
    assert torch.equal(ours.generate(prompt, 20), ref.generate(prompt, 20))  # with the KV cache: queries < keys


def test_full_tier_training_logs_its_rates_and_checks_its_precision():
    """gpt_speed.train (the full tier's loop) on a tiny GPT on the CPU: tokens/s over the loop and
    from the first logged step on; bf16 autocast applies on a GPU only, an unknown precision fails."""
    from evals.contract import QuietRun
    from reproductions.flash_attention import gpt_speed

    logged = {}

    class Run(QuietRun):
        def log(self, step, **values):
            logged.update(values)

    cfg = gpt_speed.Config(n_layer=1, n_head=2, n_embd=32, block_size=32, steps=4, batch_size=2, log_every=2,
                           attention="flash", precision="bf16")
    model = gpt_speed.train(cfg, Run())
    assert logged["train_tokens_per_s"] > 0 and logged["train_tokens_per_s_steady"] > 0
    assert next(model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        gpt_speed.autocast(gpt_speed.Config(precision="fp8"), torch.device("cpu"))


def test_full_tier_trains_on_fineweb_shards_in_order_and_resumes(tmp_path):
    """The full tier's data: FineWeb shards read in order (evals/tasks/fineweb.py). On shards that
    repeat one short token pattern the model learns it (the loop trains on what the shards hold),
    the model is GPT-2-vocabulary sized, and a resumed run continues from the batch it stopped at."""
    from evals.contract import QuietRun
    from evals.tasks import fineweb
    from reproductions.flash_attention import gpt_speed

    pattern = torch.tensor([50256, 11, 262, 286, 13, 40, 1000, 50000] * 1024)
    for name in ("fineweb_train_000001.bin", "fineweb_val_000000.bin"):
        fineweb.write_shard(tmp_path / name, pattern.numpy())
    logged: list[dict] = []

    class Run(QuietRun):
        def log(self, step, **values):
            logged.append({"step": step, **values})

    cfg = gpt_speed.Config(n_layer=1, n_head=2, n_embd=32, block_size=32, steps=60, batch_size=4, log_every=10,
                           lr=0.01, min_lr=0.001, warmup_steps=5, attention="naive", data="fineweb",
                           data_root=str(tmp_path), tokenizer="gpt2")
    model = gpt_speed.train(cfg, Run())
    assert model.gpt.cfg.vocab_size == fineweb.VOCAB_SIZE and model.tokenizer_name == "gpt2"
    losses = [e["train_loss"] for e in logged if "train_loss" in e]
    assert losses[0] > 5 and losses[-1] < 0.5, losses  # from about ln(50257) to a learned cycle
    assert gpt_speed.required_data(cfg) == [] and "fineweb10B-gpt2" in gpt_speed.data_fingerprint(cfg)
    assert gpt_speed.required_data(dataclasses.replace(cfg, data_root=str(tmp_path / "none")))[0].startswith(
        "FineWeb GPT-2 token shards: no fineweb_train_")


def test_full_tier_data_and_tokenizer_must_agree():
    from reproductions.flash_attention import gpt_speed

    with pytest.raises(ValueError, match="data fineweb goes with tokenizer gpt2"):
        gpt_speed.build(gpt_speed.Config(data="fineweb", tokenizer="bpe"))
    with pytest.raises(ValueError, match="data fineweb goes with tokenizer gpt2"):
        gpt_speed.build(gpt_speed.Config(data="code", tokenizer="gpt2"))
    with pytest.raises(ValueError, match="config field 'data'"):
        gpt_speed.build(gpt_speed.Config(data="openwebtext"))


def test_dry_run_step_of_the_triton_arm_on_a_gpu_machine_steps_its_cpu_model(monkeypatch):
    """The dry run builds on the CPU on every machine: where CUDA is present (and Triton is compiled,
    not interpreted), the step must still swap in the PyTorch kernel rather than hand CPU tensors to Triton."""
    from reproductions.flash_attention import gpt_speed

    def forward_only(model, cfg):  # the step's forward pass, without the optimiser (which would probe CUDA)
        logits = model.gpt(torch.randint(model.gpt.cfg.vocab_size, (1, 8)))
        return {"loss": float((logits[0] if isinstance(logits, tuple) else logits).float().mean())}

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpt_speed.lm, "dry_run_step", forward_only)
    cfg = gpt_speed.Config(n_layer=1, n_head=2, n_embd=32, block_size=32, attention="triton")
    out = gpt_speed.dry_run_step(gpt_speed.build(cfg), cfg)
    assert out["loss"] == out["loss"]  # a number, no error from Triton about CPU tensors
