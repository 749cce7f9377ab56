"""Deep RL from Human Preferences: eq. (1) and the reward-model loss against naive formulas and
torch's BCE, the synthetic oracle (and its noise rate), ensemble-disagreement queries on hand
cases, reward normalisation, the label schedule, the fit, and a tiny end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evals.contract import QuietRun
from evals.evaluators import REGISTRY, _load_builtin, derived_metrics
from reproductions.rlhf.rlhf import (Config, Preferences, RewardEnsemble, build, disagreement, fit, label_schedule,
                                     oracle_labels, preference_loss, preference_probability, renormalise,
                                     select_queries, train)


def test_bradley_terry_probability_is_the_naive_softmax_over_summed_rewards():
    g = torch.Generator().manual_seed(0)
    r1, r2 = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    naive = [math.exp(sum(a)) / (math.exp(sum(a)) + math.exp(sum(b))) for a, b in zip(r1.tolist(), r2.tolist())]
    got = preference_probability(r1.sum(-1), r2.sum(-1))
    assert torch.allclose(got, torch.tensor(naive, dtype=torch.float64), atol=1e-12)


def test_preference_loss_without_noise_is_binary_cross_entropy():
    g = torch.Generator().manual_seed(1)
    R1, R2 = 3 * torch.randn(64, generator=g, dtype=torch.float64), 3 * torch.randn(64, generator=g, dtype=torch.float64)
    mu = torch.tensor([1.0, 0.0, 0.5, 1.0] * 16, dtype=torch.float64)
    p = [math.exp(a) / (math.exp(a) + math.exp(b)) for a, b in zip(R1.tolist(), R2.tolist())]
    naive = -sum(m * math.log(q) + (1 - m) * math.log(1 - q) for m, q in zip(mu.tolist(), p)) / len(p)
    got = preference_loss(R1, R2, mu, random_response=0.0)
    assert got.item() == pytest.approx(naive, rel=1e-10)
    # torch's BCE on the same probabilities and on the same logits
    assert got.item() == pytest.approx(F.binary_cross_entropy(torch.tensor(p, dtype=torch.float64), mu).item(), rel=1e-10)
    assert got.item() == pytest.approx(F.binary_cross_entropy_with_logits(R1 - R2, mu).item(), rel=1e-10)


def test_preference_loss_with_ten_percent_random_answers():
    """P = 0.9 P_hat + 0.05 (Section 2.2.3), taken literally, also for margins where P_hat underflows."""
    R1 = torch.tensor([0.0, 2.0, -3.0, 40.0, -40.0], dtype=torch.float64)
    R2 = torch.tensor([1.0, -1.0, 0.5, 0.0, 0.0], dtype=torch.float64)
    mu = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0], dtype=torch.float64)
    total = 0.0
    for a, b, m in zip(R1.tolist(), R2.tolist(), mu.tolist()):
        p1 = 0.9 * (1 / (1 + math.exp(b - a))) + 0.05
        p2 = 0.9 * (1 / (1 + math.exp(a - b))) + 0.05
        total -= m * math.log(p1) + (1 - m) * math.log(p2)
    assert preference_loss(R1, R2, mu, random_response=0.1).item() == pytest.approx(total / 5, rel=1e-10)
    # the loss is bounded by -log(0.05) per pair however wrong the model is
    assert preference_loss(torch.tensor([100.0]), torch.tensor([0.0]), torch.tensor([0.0]), 0.1).item() \
        == pytest.approx(-math.log(0.05), rel=1e-6)


def test_oracle_prefers_the_higher_true_return_and_answers_ties_with_half():
    rng = np.random.default_rng(0)
    mu = oracle_labels(np.array([3.0, -1.0, 2.0]), np.array([1.0, 0.5, 2.0]), 0.0, rng)
    assert mu.tolist() == [1.0, 0.0, 0.5]


@pytest.mark.parametrize("noise", [0.1, 0.5, 1.0])
def test_oracle_noise_rate(noise):
    """A random answer disagrees with the true preference half the time: the flip rate is noise / 2."""
    rng = np.random.default_rng(1)
    t1, t2 = rng.normal(size=40_000), rng.normal(size=40_000)
    clean = oracle_labels(t1, t2, 0.0, rng)
    noisy = oracle_labels(t1, t2, noise, rng)
    assert set(np.unique(noisy)) <= {0.0, 1.0}
    assert np.mean(noisy != clean) == pytest.approx(noise / 2, abs=0.01)


def test_queries_go_to_the_pairs_the_members_disagree_on():
    # 3 members x 4 candidate pairs of P_hat[sigma1 > sigma2]
    probs = torch.tensor([[0.9, 0.5, 0.1, 0.6],
                          [0.9, 0.5, 0.9, 0.4],
                          [0.9, 0.5, 0.5, 0.5]])
    assert disagreement(probs).tolist() == pytest.approx(np.var(probs.numpy(), axis=0).tolist())
    assert select_queries(probs, 2).tolist() == [2, 3]  # variances 0.107, 0.0067; pairs 0 and 1 are agreed on
    assert select_queries(probs, 1).tolist() == [2]


def test_reward_normalisation_gives_each_member_zero_mean_unit_std_and_r_hat_their_mean():
    torch.manual_seed(0)
    ens = RewardEnsemble(5, 3, 16)
    x = 4 * torch.randn(500, 5) + 2
    renormalise(ens, x)
    with torch.no_grad():
        for m in ens.members:
            y = m(x)
            assert y.mean().item() == pytest.approx(0.0, abs=1e-5)
            assert y.std().item() == pytest.approx(1.0, abs=1e-5)
        naive = sum((m.raw(x) - m.raw(x).mean()) / m.raw(x).std() for m in ens.members) / 3
        assert torch.allclose(ens(x), naive, atol=1e-5)


def test_label_schedule_front_loads_a_quarter_then_decays():
    cfg = Config(labels=700, total_steps=200_000, refit_every=10_240, label_rate_c=50_000)
    sched = label_schedule(cfg)
    assert sched[0] == (0, 175)
    assert sum(n for _, n in sched) == 700
    later = [n for _, n in sched[1:]]
    assert later[0] > later[-1] and all(t < cfg.total_steps for t, _ in sched)
    assert len(sched) == 1 + 19


def test_fit_learns_a_linear_reward_from_oracle_labels():
    """Segments scored by a hidden linear reward, labelled by the oracle: the refit ensemble orders
    fresh pairs as the hidden reward does."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    w = rng.normal(size=6)
    def pairs(n):
        seg = rng.normal(size=(n, 2, 10, 6)).astype(np.float32) * np.array([1, 1, 1, 10, 10, 0.1], dtype=np.float32)
        return seg, (seg / np.array([1, 1, 1, 10, 10, 0.1]) @ w).sum(-1)
    cfg = Config(ensemble=3, rm_steps=300, rm_hidden=32)
    ens = RewardEnsemble(6, 3, 32)
    data = Preferences(3, cfg.l2_init)
    seg, ret = pairs(400)
    data.add(seg, oracle_labels(ret[:, 0], ret[:, 1], 0.0, rng), rng)
    opts = [torch.optim.Adam(m.parameters(), lr=3e-3) for m in ens.members]
    stats = fit(ens, data, opts, cfg, rng, "cpu", cfg.rm_steps)
    assert 0.5 < stats["rm_val_accuracy"] <= 1.0
    test_seg, test_ret = pairs(300)
    with torch.no_grad():
        r = ens(torch.as_tensor(test_seg)).sum(-1).numpy()
    acc = np.mean((r[:, 0] > r[:, 1]) == (test_ret[:, 0] > test_ret[:, 1]))
    assert acc > 0.85


def test_tiny_end_to_end_run_is_scored_and_round_trips(tmp_path):
    cfg = Config(env_id="Reacher-v5", total_steps=1024, num_steps=256, epochs=1, labels=16, refit_every=256,
                 rm_steps=5, rm_pretrain_steps=5, ensemble=2, segment_length=25)
    logged = []

    class Run(QuietRun):
        def log(self, step, **values):
            logged.append((step, values))

    agent = train(cfg, Run(seed=3))
    labels = [v["labels"] for _, v in logged if "labels" in v]
    assert labels[0] == 4 and labels[-1] == 16  # a quarter before RL, the whole budget by the end
    _load_builtin()
    ev = REGISTRY["preference_accuracy"]
    res = ev(agent, cfg, ev.options.model_validate({"episodes": 4}))
    assert 0.0 <= res.metrics["pair_accuracy"] <= 1.0 and len(res.samples["pair_accuracy"]) == 4
    assert derived_metrics(res) == pytest.approx({k: res.metrics[k] for k in ("return_gain", "pair_accuracy")})
    path = tmp_path / "agent.safetensors"
    agent.save(path)
    loaded = build(cfg).load(path)
    obs = np.random.default_rng(0).normal(size=10)
    assert np.allclose(loaded.act(obs), agent.act(obs))
    a, o = np.zeros((3, 2)), np.random.default_rng(1).normal(size=(3, 10))
    assert np.allclose(loaded.predicted_rewards(o, a, o), agent.predicted_rewards(o, a, o))
    # the true-reward arm has no reward model and is scored on its return gain only
    true_agent = train(Config(**{**cfg.__dict__, "reward": "true"}), QuietRun(seed=3))
    res = ev(true_agent, cfg, ev.options.model_validate({"episodes": 2}))
    assert "pair_accuracy" not in res.metrics and "return_gain" in res.metrics
