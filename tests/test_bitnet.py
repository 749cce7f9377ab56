"""BitNet's math against independent references: eqs. (1), (2), (5), (6) written out naively in
float64, the straight-through gradients against autograd through the same formulas with the
quantisers taken as constants, the 1-bit packing against numpy's packbits, Table 1's energies
against the printed values, and the model's save-load round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reproductions.bitnet import energy
from reproductions.bitnet.bitlinear import (BitLinear, PostTrainingBinarised, absmax_quantize, binarise,
                                            binarise_after_training, pack_signs, unpack_signs)
from reproductions.bitnet.bitnet import Config, build

SMALL = dict(n_layer=2, n_head=2, n_embd=32, block_size=32)


def naive_bitlinear(x: np.ndarray, w: np.ndarray, eps_ln=1e-5, eps_clip=1e-5, bits=8) -> np.ndarray:
    """Eq. (6) in float64, element by element where it matters: LN (eq. 5), absmax per token
    (eq. 2), Sign(W - alpha) (eq. 1), y = W~ x~ * beta * gamma / Q_b."""
    qb = 2 ** (bits - 1)
    alpha, beta = w.mean(), np.abs(w).mean()
    w_bin = np.where(w - alpha > 0, 1.0, -1.0)
    out = np.zeros((x.shape[0], w.shape[0]))
    for t, row in enumerate(x):
        ln = (row - row.mean()) / math.sqrt(row.var() + eps_ln)
        gamma = np.abs(ln).max()
        xq = np.array([round(min(qb - eps_clip, max(-qb + eps_clip, v * qb / gamma))) for v in ln])
        out[t] = (w_bin @ xq) * beta * gamma / qb
    return out


def test_binarise_is_sign_of_centred_weights_with_mean_abs_scale():
    w = torch.tensor([[0.3, -0.1], [0.1, 0.5]])        # alpha = 0.2
    signs, beta = binarise(w)
    assert signs.tolist() == [[1.0, -1.0], [-1.0, 1.0]]
    assert beta.item() == pytest.approx(0.25)          # ||W||_1 / nm
    w = torch.tensor([[1.0, 3.0]])                      # alpha = 2: nothing equals it
    assert binarise(w)[0].tolist() == [[-1.0, 1.0]]
    w = torch.tensor([[2.0, 2.0]])                      # W - alpha = 0 everywhere: Sign(0) = -1 (eq. 1)
    assert binarise(w)[0].tolist() == [[-1.0, -1.0]]


def test_absmax_quantisation_known_values():
    x = torch.tensor([[1.0, -0.5, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]])
    xq, gamma = absmax_quantize(x)
    # Q_b = 128: 1.0 -> 128 clipped to 128 - eps -> rounds to 128; -0.5 -> -64; 0.25 -> 32
    assert xq[0].tolist() == [128.0, -64.0, 32.0, 0.0]
    assert gamma[0].item() == 1.0
    assert xq[1].tolist() == [0.0] * 4                  # a zero token stays zero
    big = torch.randn(64, 100) * 7
    xq, gamma = absmax_quantize(big)
    assert xq.abs().max() <= 128 and torch.equal(xq, xq.round())
    assert torch.allclose(xq * gamma / 128, big, atol=gamma.max().item() / 128)   # half a step, at most


def test_bitlinear_forward_matches_the_naive_formula():
    torch.manual_seed(0)
    layer = BitLinear(24, 10)
    nn.init.normal_(layer.weight, std=0.05)
    x = torch.randn(7, 24) * 3 + 1
    ours = layer(x).detach().double().numpy()
    ref = naive_bitlinear(x.double().numpy(), layer.weight.detach().double().numpy())
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_bitlinear_straight_through_gradients():
    """The gradients are those of the same layer with Sign and Clip/round replaced by the identity
    (STE): to W as if W~ beta were W, to x through the LayerNorm alone."""
    torch.manual_seed(1)
    layer = BitLinear(16, 8)
    x = torch.randn(5, 16, requires_grad=True)
    g = torch.randn(5, 8)
    (layer(x) * g).sum().backward()

    w = layer.weight.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    signs, beta = binarise(w.detach())
    ln = F.layer_norm(x2, (16,), eps=1e-5)
    xq, gamma = absmax_quantize(ln.detach())
    x_hat_const = xq * gamma / 128
    # gradient to W: grad_y^T x_hat (the quantised input), as for a linear layer with weight W
    (F.linear(x_hat_const, w) * g).sum().backward()
    assert torch.allclose(layer.weight.grad, w.grad, atol=1e-6)
    assert torch.allclose(layer.weight.grad, g.T @ x_hat_const, atol=1e-6)
    # gradient to x: through LN, with the quantiser passed by and the weight W~ beta
    (F.linear(ln, signs * beta) * g).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)


def test_post_training_binarisation_keeps_the_output_layer_and_matches_the_formula():
    torch.manual_seed(2)
    lin = nn.Linear(12, 6)
    x = torch.randn(4, 12)
    signs, beta = binarise(lin.weight.detach())
    xq, gamma = absmax_quantize(x)          # no LayerNorm: the model never learned one
    expected = F.linear(xq * gamma / 128, signs * beta, lin.bias)
    assert torch.allclose(PostTrainingBinarised(lin)(x), expected)

    model = build(Config(**SMALL, mode="fp"))
    binarise_after_training(model.gpt)
    kinds = {type(m).__name__ for n, m in model.gpt.named_modules() if ".w_" in n}
    assert kinds == {"PostTrainingBinarised"}
    assert isinstance(model.gpt.lm_head, nn.Linear)
    with pytest.raises(TypeError):
        binarise_after_training(build(Config(**SMALL, mode="bitnet")).gpt)


@pytest.mark.parametrize("shape", [(8,), (7, 13), (3, 5, 16), (1,)])
def test_pack_round_trip_and_numpy_reference(shape):
    g = torch.Generator().manual_seed(3)
    signs = torch.where(torch.rand(shape, generator=g) > 0.5, 1.0, -1.0)
    packed = pack_signs(signs)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(signs.numel() / 8)
    np.testing.assert_array_equal(packed.numpy(), np.packbits(signs.numpy().flatten() > 0))
    assert torch.equal(unpack_signs(packed, shape), signs)


def test_models_use_bitlinear_in_every_projection_and_store_at_one_bit():
    agent = build(Config(**SMALL, mode="paired"))
    projections = [m for n, m in agent.gpt.named_modules() if n.split(".")[-1].startswith("w_")]
    assert projections and all(isinstance(m, BitLinear) for m in projections)
    assert not isinstance(agent.gpt.lm_head, BitLinear) and not any(isinstance(m, BitLinear) for m in agent.twin.modules())
    assert agent.num_parameters() == agent.twin.num_parameters()
    stored = agent.weight_storage()
    n_weights = sum(m.weight.numel() for m in projections)
    assert stored["weight_bytes_fp16"] >= 2 * n_weights and stored["weight_bytes_fp32"] >= 4 * n_weights
    assert n_weights / 8 <= stored["weight_bytes_packed"] < n_weights / 8 + 256 * len(projections)   # bits, header
    # the stored signs are the model's own binarised weights
    from safetensors.torch import load
    from safetensors.torch import save as st_save
    from reproductions.bitnet.bitlinear import pack_signs as pack
    w = agent.gpt.blocks[0].attn.w_q.weight.detach()
    assert torch.equal(unpack_signs(load(st_save({"s": pack(binarise(w)[0])}))["s"], tuple(w.shape)), binarise(w)[0])


def test_save_load_round_trip(tmp_path):
    cfg = Config(**SMALL, mode="paired")
    agent = build(cfg).eval()
    path = tmp_path / "m.safetensors"
    agent.save(path)
    torch.manual_seed(99)
    other = build(cfg).eval().load(path)
    x = torch.randint(256, (2, 16))
    assert torch.equal(agent(x)[0], other(x)[0])
    assert torch.equal(agent.twin(x)[0], other.twin(x)[0])


# Table 1 (7nm and 45nm, input length 512), as printed: (model, weight bits, node) -> (MUL, ADD) in J
TABLE_1 = {
    ("6.7B", 32, "7nm"): (4.41, 1.28), ("6.7B", 16, "7nm"): (1.14, 0.54), ("6.7B", 1, "7nm"): (0.02, None),
    ("30B", 16, "7nm"): (5.21, 2.45), ("30B", 1, "7nm"): (0.06, None),
}   # BitNet's ADD column is the one this reading does not reproduce (next test)


@pytest.mark.parametrize("key", sorted(TABLE_1))
def test_energy_reproduces_table_1(key):
    model, bits, node = key
    ours = energy.matmul_energy(energy.PAPER_MODELS[model], bits, node)
    mul, add = TABLE_1[key]
    assert round(ours["mul"], 2) == mul
    if add is not None:
        assert round(ours["add"], 2) == add


def test_energy_known_counts_and_the_one_mismatch():
    assert energy.matmul_ops(2, 3, 4) == (2 * 2 * 4, 2 * 3 * 4)
    # one block of d = 2 (FFN 8), one head, 1 token: projections 4*(1*2) + 2*(2*8) = 40 multiplications
    ops = energy.operation_counts(energy.Shape(1, 2, 1), seq_len=1)
    assert ops["proj_mul"] == 4 * 4 + 2 * 16 and ops["attn_mul"] == 2 * 2
    # BitNet's ADD at 7nm: the paper prints 0.04 J (6.7B) and 0.14 J (30B); this reading of its
    # formulas (INT8 additions at Table 2's 0.007 pJ, FP16 attention) gives 0.034 J and 0.135 J
    assert energy.matmul_energy(energy.PAPER_MODELS["6.7B"], 1, "7nm")["add"] == pytest.approx(0.0341, abs=5e-4)
    assert energy.matmul_energy(energy.PAPER_MODELS["30B"], 1, "7nm")["add"] == pytest.approx(0.1348, abs=5e-4)


def test_low_bit_evaluator_scores_the_pair_and_its_metrics_recompute_from_the_samples():
    from evals.contract import ContractError
    from evals.evaluators import REGISTRY, _load_builtin, derived_metrics

    _load_builtin()
    ev = REGISTRY["low_bit"]
    cfg = Config(**SMALL, mode="paired")
    agent = build(cfg).eval()
    result = ev(agent, cfg, ev.options(tokens=256, batch_size=2))
    m = result.metrics
    assert result.protocol["models"] == ["model", "fp", "ptq"]
    assert type(agent.twin.gpt.blocks[0].attn.w_q) is nn.Linear   # binarised a copy, not the twin
    assert m["loss_gap"] == pytest.approx(m["model_val_loss"] - m["fp_val_loss"])
    assert m["ptq_loss_gap"] == pytest.approx(m["ptq_val_loss"] - m["fp_val_loss"])
    assert m["weight_compression_fp16"] == pytest.approx(m["weight_bytes_fp16"] / m["weight_bytes_packed"])
    assert m["energy_mul_7nm_fp16_6.7B"] == pytest.approx(energy.table_1()["energy_mul_7nm_fp16_6.7B"])
    derived = derived_metrics(result)
    assert derived and all(m[k] == pytest.approx(v, rel=1e-12) for k, v in derived.items())
    # the FP arm alone: its own post-training binarisation, no twin
    fp = build(Config(**SMALL, mode="fp")).eval()
    assert ev(fp, cfg, ev.options(tokens=256, batch_size=2)).protocol["models"] == ["model", "ptq"]
    with pytest.raises(ContractError):
        ev(nn.Linear(2, 2), cfg, ev.options(tokens=256, batch_size=2))
