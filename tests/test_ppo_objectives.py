"""PPO's Table 1 alternatives (reproductions/ppo/objectives.py): eq. (6), eq. (8) and section 4's
beta rule against hand computations; the learners inside ppo.train; the smoke arms."""

import math

import pytest
import torch

from evals.config import resolve
from evals.record import load_record
from evals.spec import load_spec
from evals.tier_runner import run_one
from reproductions.ppo import objectives as obj
from reproductions.ppo import ppo


def test_unclipped_surrogate_is_the_mean_of_ratio_times_advantage():
    ratio = torch.tensor([0.5, 1.0, 3.0, 0.1])
    adv = torch.tensor([1.0, -2.0, 1.0, -1.0])
    assert obj.unclipped_surrogate(ratio, adv).item() == pytest.approx((0.5 - 2.0 + 3.0 - 0.1) / 4)
    # Past the clip range the clipped objective stops growing (r = 3, A = 1 counts as 1.2); eq. (6) does not.
    assert obj.unclipped_surrogate(ratio, adv).item() > ppo.clipped_surrogate(ratio, adv, 0.2).item()


def _gauss_kl(m1, s1, m2, s2):
    """KL[N(m1, s1^2) || N(m2, s2^2)] in one dimension, the textbook closed form."""
    return math.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5


def test_kl_penalty_loss_against_a_naive_formula():
    torch.manual_seed(0)
    cfg = obj.Config(env_id="Hopper-v5", hidden=8, objective="adaptive_kl", normalize_advantage=False,
                     vf_coef=0.0, ent_coef=0.0)
    agent = ppo.build(cfg)
    learner = obj.AdaptiveKLLearner(agent, cfg)
    learner.beta = 3.0
    obs, actions, adv = torch.randn(5, 11), torch.randn(5, 3), torch.randn(5)
    with torch.no_grad():
        old_dist, _ = agent(obs)
        logp_old = agent.log_prob(old_dist, actions) + torch.tensor([0.1, -0.2, 0.0, 0.3, -0.1])
        old = {"old_loc": old_dist.loc + 0.3 * torch.randn(5, 3), "old_scale": old_dist.scale * 1.5}
    mb = {"obs": obs, "actions": actions, "logp": logp_old, "advantages": adv, "returns": torch.zeros(5), **old}
    loss, stats = learner.minibatch_loss(mb, 0.2)
    with torch.no_grad():
        new_dist, _ = agent(obs)
        logp_new = agent.log_prob(new_dist, actions)
    naive = 0.0
    for t in range(5):
        kl = sum(_gauss_kl(old["old_loc"][t, j].item(), old["old_scale"][t, j].item(),
                           new_dist.loc[t, j].item(), new_dist.scale[t, j].item()) for j in range(3))
        naive += math.exp(logp_new[t] - logp_old[t]) * adv[t].item() - 3.0 * kl
    assert loss.item() == pytest.approx(-naive / 5, rel=1e-5)   # vf_coef = ent_coef = 0: loss = -L^KLPEN
    assert stats["kl_minibatch"].item() > 0


def test_categorical_kl_against_a_naive_formula():
    cfg = obj.Config(env_id="CartPole-v1", hidden=8)
    agent = ppo.build(cfg)
    obs = torch.randn(3, 4)
    old_logits = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    with torch.no_grad():
        dist, _ = agent(obs)
        kl = obj.kl_old_new(agent, {"old_logits": old_logits}, dist)
    p, q = old_logits.softmax(-1), dist.probs
    naive = [sum(p[t, a] * math.log(p[t, a] / q[t, a]) for a in range(2)) for t in range(3)]
    assert torch.allclose(kl, torch.tensor(naive), atol=1e-6)


@pytest.mark.parametrize("kl,expected", [(0.001, 0.5), (0.0066, 0.5), (0.0067, 1.0), (0.01, 1.0), (0.015, 1.0),
                                         (0.0151, 2.0), (0.5, 2.0)])
def test_beta_rule(kl, expected):
    # d_targ = 0.01: halve below 0.01 / 1.5 = 0.00667, double above 0.015
    assert obj.adapt_beta(1.0, kl, 0.01) == expected


def test_no_clip_learner_loss_is_minus_the_mean_ratio_times_advantage():
    torch.manual_seed(1)
    cfg = obj.Config(env_id="CartPole-v1", hidden=8, vf_coef=0.0, ent_coef=0.0, normalize_advantage=False)
    agent = ppo.build(cfg)
    obs, actions, adv = torch.randn(6, 4), torch.randint(0, 2, (6,)), torch.randn(6)
    with torch.no_grad():
        logp = agent.log_prob(agent(obs)[0], actions)
    logp_old = logp - torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 2.0])  # ratios e^1, e^-1, ... far outside 1 +- 0.2
    mb = {"obs": obs, "actions": actions, "logp": logp_old, "advantages": adv, "returns": torch.zeros(6)}
    loss, _ = obj.NoClipLearner(agent, cfg).minibatch_loss(mb, 0.2)
    ratio = torch.exp(logp - logp_old)
    assert loss.item() == pytest.approx(-(ratio * adv).mean().item(), rel=1e-5)
    clipped, _ = ppo.Learner(agent, cfg).minibatch_loss(mb, 0.2)
    assert clipped.item() != pytest.approx(loss.item())


def test_adaptive_kl_update_measures_kl_from_the_old_policy_and_adapts_beta():
    torch.manual_seed(2)
    cfg = obj.Config(env_id="CartPole-v1", hidden=8, epochs=4, minibatch_size=16, lr=1e-2, objective="adaptive_kl",
                     kl_target=1e-6)
    agent = ppo.build(cfg)
    learner = obj.AdaptiveKLLearner(agent, cfg)
    obs, actions = torch.randn(32, 4), torch.randint(0, 2, (32,))
    with torch.no_grad():
        old_probs = agent(obs)[0].probs
        logp = agent.log_prob(agent(obs)[0], actions)
    batch = {"obs": obs, "actions": actions, "logp": logp, "advantages": torch.randn(32), "returns": torch.zeros(32)}
    stats = learner.update(batch, 1.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        new_probs = agent(obs)[0].probs
    naive = (old_probs * (old_probs / new_probs).log()).sum(-1).mean().item()
    assert stats["kl"] == pytest.approx(naive, rel=1e-4) and naive > 1.5e-6
    assert stats["beta"] == 1.0 and learner.beta == 2.0   # d far above 1.5 d_targ: doubled


def test_using_learner_binds_and_restores_ppo_learner():
    original = ppo.Learner
    with pytest.raises(RuntimeError):
        with obj.using_learner(obj.AdaptiveKLLearner):
            assert ppo.Learner is obj.AdaptiveKLLearner
            raise RuntimeError
    assert ppo.Learner is original


@pytest.mark.parametrize("arm", ["no_clip", "adaptive_kl"])
def test_smoke_arms(run_opts, arm):
    rec = load_record(run_one(resolve(load_spec("ppo"), "smoke", arm, 1), run_opts))
    assert rec.status == "ok", rec.error
    assert "reproductions/ppo/objectives.py" in rec.provenance.source_files
    assert ("beta" in rec.curves) == (arm == "adaptive_kl")
