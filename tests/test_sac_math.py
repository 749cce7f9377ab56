"""SAC's math against independent references (torch.distributions, hand-written formulas)."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from reproductions.sac import sac


def test_squashed_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 3), torch.rand(64, 3) - 1.0
    u = mean + log_std.exp() * torch.randn(64, 3)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()]).log_prob(torch.tanh(u)).sum(-1)
    ours = sac.squashed_log_prob(u, mean, log_std)
    assert torch.allclose(ours, reference, atol=1e-4)


def test_squashed_log_prob_matches_the_naive_formula_and_stays_finite_when_saturated():
    mean, log_std = torch.zeros(1, 1), torch.zeros(1, 1)
    u = torch.tensor([[0.7]])
    naive = -0.5 * 0.7**2 - 0.5 * math.log(2 * math.pi) - math.log(1 - math.tanh(0.7) ** 2)
    assert sac.squashed_log_prob(u, mean, log_std).item() == pytest.approx(naive, rel=1e-5)
    # tanh(20) == 1.0 in float32, where the naive log(1 - tanh^2) is -inf; eq. (21)'s stable form is not.
    assert torch.isfinite(sac.squashed_log_prob(torch.tensor([[20.0]]), mean, log_std)).all()


def test_soft_q_target_by_hand():
    r, d = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0])
    q1, q2 = torch.tensor([5.0, 3.0]), torch.tensor([4.0, 7.0])
    logp = torch.tensor([-1.0, 0.5])
    y = sac.soft_q_target(r, d, q1, q2, logp, alpha=0.2, gamma=0.9)
    # first: 1 + 0.9 * (min(5, 4) - 0.2 * -1) = 1 + 0.9 * 4.2; second is terminal: just r.
    assert torch.allclose(y, torch.tensor([1 + 0.9 * 4.2, -2.0]))


def test_temperature_loss_gradient_pushes_entropy_to_target():
    log_alpha = torch.tensor(0.0, requires_grad=True)
    log_prob = torch.tensor([-3.0, -1.0])  # entropy estimate -mean(log_prob) = 2, above the target -1
    loss = sac.temperature_loss(log_alpha, log_prob, target_entropy=-1.0)
    loss.backward()
    # d/dlog_alpha of -(log_alpha * (logp + H)).mean() = -mean(logp + H) = -mean([-4, -2]) = 3
    assert log_alpha.grad.item() == pytest.approx(3.0)
    # so the gradient is positive: descent lowers alpha, the policy may grow less random


def test_polyak_average():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = 0.9 * a.weight.detach() + 0.1 * b.weight.detach()
    sac.polyak(a, b, tau=0.1)
    assert torch.allclose(a.weight, expected)


def _agent(**kw):
    cfg = sac.Config(hidden=16, **kw)
    return cfg, sac.build(cfg)


def test_actions_lie_in_the_env_box_and_deterministic_is_tanh_of_mean():
    cfg, agent = _agent()
    obs = np.array([0.3, -0.2, 1.0], dtype=np.float32)
    a = agent.act(obs, deterministic=True)
    mean, _ = agent.actor(torch.as_tensor(obs).unsqueeze(0))
    assert a.shape == (1,) and -2.0 <= a[0] <= 2.0  # Pendulum's box is [-2, 2]
    assert a[0] == pytest.approx(2.0 * torch.tanh(mean).item(), abs=1e-6)
    samples = np.array([agent.act(obs, deterministic=False) for _ in range(200)])
    assert samples.std() > 0 and (np.abs(samples) <= 2.0).all()


def test_update_reduces_critic_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg, agent = _agent(lr=1e-3)
    learner = sac.Learner(agent, cfg)
    batch = {"obs": torch.randn(64, 3), "actions": torch.rand(64, 1) * 2 - 1, "rewards": torch.randn(64),
             "next_obs": torch.randn(64, 3), "terminated": torch.zeros(64)}
    first = learner.update(batch)["critic_loss"].item()
    for _ in range(100):
        last = learner.update(batch)["critic_loss"].item()
    assert last < first


def test_target_entropy_defaults_to_minus_action_dim():
    _, agent = _agent(env_id="HalfCheetah-v5")
    assert agent.target_entropy == -6.0


def test_save_load_round_trip(tmp_path):
    _, a = _agent()
    _, b = _agent()
    a.save(tmp_path / "w.safetensors")
    b.load(tmp_path / "w.safetensors")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
