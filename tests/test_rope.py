"""RoPE: the relative-position property (exactly, up to float error), the rotation against the
complex-number form of the paper, and KV-cache generation with rotary positions."""

import pytest
import torch

from reproductions.rope import Config, build
from reproductions.rope.rope import RotaryPositions, apply_rotary, rotary_frequencies
from reproductions.transformer.gpt import GPT, GPTConfig
from reproductions.transformer.layers import sinusoidal_table

CFG = GPTConfig(vocab_size=40, block_size=64, n_layer=2, n_head=2, n_embd=32)


def test_rotation_equals_complex_multiplication():
    """Eq. (12)-(13): pairs as complex numbers, rotated by e^{i m theta_j}."""
    torch.manual_seed(0)
    rope = RotaryPositions(CFG)
    x = torch.randn(3, 64, 16, dtype=torch.float64)
    pos = torch.arange(64)
    ours = apply_rotary(x, rope.cos[pos].double(), rope.sin[pos].double())
    z = torch.view_as_complex(x.view(3, 64, 8, 2).contiguous())
    angle = pos[:, None].double() * rotary_frequencies(16).double()
    expected = torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).flatten(-2)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(ours.norm(dim=-1), x.norm(dim=-1))  # rotations keep lengths


def test_score_depends_only_on_relative_position():
    torch.manual_seed(1)
    rope = RotaryPositions(CFG)
    q, k = torch.randn(16), torch.randn(16)
    qs = q.expand(64, 16)[None, None]
    ks = k.expand(64, 16)[None, None]
    rq, rk = rope.rotate(qs, ks, torch.arange(64))
    scores = (rq[0, 0] @ rk[0, 0].t()).double()  # scores[m, n] = <R_m q, R_n k>
    for offset in (-40, -3, 0, 1, 17, 50):
        diagonal = torch.diagonal(scores, offset=offset)  # all (m, n) with n - m = offset
        assert (diagonal - diagonal[0]).abs().max() < 1e-4 * scores.abs().max()
    assert scores[0, 5] != pytest.approx(scores[0, 6].item())  # yet it does depend on n - m


def test_rope_gpt_generates_with_the_cache_as_without():
    torch.manual_seed(2)
    model = GPT(CFG, position=RotaryPositions(CFG)).eval()
    prompt = torch.randint(40, (2, 7))
    assert torch.equal(model.generate(prompt, 25), model.generate(prompt, 25, use_cache=False))


def test_rope_module_builds_every_arm():
    for position in ("rope", "learned", "sinusoidal"):
        model = build(Config(n_layer=1, n_head=2, n_embd=16, block_size=16, position=position))
        assert model(torch.zeros(1, 16, dtype=torch.long))[0].shape == (1, 16, 256)
    rope = build(Config(n_layer=1, n_head=2, n_embd=16, block_size=16))
    assert isinstance(rope.gpt.position, RotaryPositions) and not list(rope.gpt.position.parameters())


def test_sinusoidal_baseline_keeps_the_transformers_relative_scale():
    """§3.4-3.5 of the Transformer: unit-scale token embeddings (d^-1/2 init times sqrt(d)) beside
    sinusoids of RMS 1/sqrt(2). The rope tier's sinusoidal arm keeps that ratio against the GPT's own
    token embeddings, measured on a built model; the GPT's unscaled table is about 35x too large."""
    torch.manual_seed(3)
    cfg = Config(n_layer=1, n_head=4, n_embd=128, block_size=128, position="sinusoidal")
    gpt = build(cfg).gpt
    rms = lambda t: t.pow(2).mean().sqrt().item()  # noqa: E731
    table = gpt.position.embed(torch.zeros(cfg.block_size, cfg.n_embd), torch.arange(cfg.block_size))
    assert rms(table) / rms(gpt.wte.weight) == pytest.approx(2 ** -0.5, rel=0.05)
    unscaled = sinusoidal_table(cfg.block_size, cfg.n_embd)
    assert rms(unscaled) / rms(gpt.wte.weight) > 30
    torch.testing.assert_close(table, 0.02 * unscaled)
