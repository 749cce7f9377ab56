"""Mixtral's sparse MoE against a dense reference computation of eq. (1)-(3), the load-balancing
loss, active-parameter matching of the two arms, and the expert-share statistics."""

import pytest
import torch

from reproductions.mixtral import Config, build
from reproductions.mixtral.moe import SparseMoE, load_balancing_loss


def test_sparse_moe_equals_the_dense_formula():
    torch.manual_seed(0)
    moe = SparseMoE(16, 24, n_experts=8, top_k=2)
    x = torch.randn(3, 5, 16)
    flat = x.reshape(-1, 16)
    logits = flat @ moe.gate.weight.t()
    kth = logits.topk(2, dim=-1).values[:, -1:]
    gates = torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)  # Softmax(TopK(x W_g))
    expected = sum(gates[:, i:i + 1] * moe.experts[i](flat) for i in range(8)).reshape(3, 5, 16)
    torch.testing.assert_close(moe(x), expected, atol=1e-5, rtol=1e-5)
    assert ((gates > 0).sum(-1) == 2).all() and torch.allclose(gates.sum(-1), torch.ones(15))
    assert moe.expert_counts.sum() == 15 * 2


def test_router_learns_through_the_gates():
    torch.manual_seed(1)
    moe = SparseMoE(8, 8, n_experts=4, top_k=2)
    moe(torch.randn(10, 8)).pow(2).sum().backward()
    assert moe.gate.weight.grad is not None and moe.gate.weight.grad.abs().sum() > 0


def test_load_balancing_loss():
    logits = torch.zeros(8, 4)  # uniform router probabilities
    balanced = torch.tensor([[0, 1], [2, 3]] * 4)
    assert load_balancing_loss(logits, balanced, 4).item() == pytest.approx(1.0)
    # all slots on experts 0 and 1, which also hold all the probability mass: loss n * (0.5 * 0.5 * 2) = 2
    skewed_logits = torch.tensor([[10.0, 10.0, -10.0, -10.0]]).expand(8, 4)
    skewed = torch.tensor([[0, 1]] * 8)
    assert load_balancing_loss(skewed_logits, skewed, 4).item() == pytest.approx(2.0, abs=1e-3)


def test_dense_arm_has_the_moe_arms_active_parameters():
    shape = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, expert_hidden=24)
    moe, dense = build(Config(ffn="moe", **shape)), build(Config(ffn="dense", **shape))
    router = 2 * 32 * 8
    assert moe.active_parameters() == dense.num_parameters() + router
    assert moe.num_parameters() > 3 * dense.num_parameters() / 2
    moe(torch.randint(256, (2, 16)))
    stats = moe.statistics()
    assert sum(stats[f"expert_share_{i}"] for i in range(8)) == pytest.approx(1.0)
    assert stats["expert_share_min"] <= 1 / 8 <= stats["expert_share_max"]
    moe.reset_statistics()
    assert all(m.expert_counts.sum() == 0 for m in moe.moe_layers()) and dense.statistics() == {}
    with pytest.raises(ValueError, match="ffn"):
        build(Config(ffn="sparse"))


def test_routing_is_computed_wide_and_breaks_ties_to_the_lower_expert():
    """Issue 12: routing must not hang on a last-bit difference. The router logits are float64, and
    two experts with identical router rows tie on every token: the lower index wins, in any order."""
    torch.manual_seed(4)
    moe = SparseMoE(16, 8, n_experts=6, top_k=2)
    with torch.no_grad():
        moe.gate.weight[5] = moe.gate.weight[2]
        moe.gate.weight[2] *= 1e3  # experts 2 and 5 are each token's top two or bottom two...
        moe.gate.weight[5] = moe.gate.weight[2]  # ...and tie exactly
    x = torch.randn(40, 16)
    logits, gates, selected = moe.route(x)
    assert logits.dtype == torch.float64 and gates.dtype == torch.float32
    top = logits.argmax(-1)
    for token in range(40):
        if top[token] in (2, 5):  # the tie is at the top: 2 first, then 5
            assert selected[token].tolist() == [2, 5]
    assert (top == 2).any()
