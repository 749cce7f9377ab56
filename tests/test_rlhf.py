"""Deep RL from Human Preferences: eq. (1) and the reward-model loss against naive formulas and
torch's BCE, the synthetic oracle (and its noise rate), ensemble-disagreement queries on hand
cases, reward normalisation, the label schedule, the fit, a tiny end-to-end run, and the wiring to
the project's PPO: the registered env's reward is the ensemble's normalised prediction, the oracle
sees the true returns, refits follow the schedule, the normalisation is SB3's VecNormalize's, and
the true-reward arm is plain `ppo.train`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evals.contract import QuietRun
from evals.evaluators import REGISTRY, _load_builtin, derived_metrics
from reproductions.ppo import ppo as ppo_paper
from reproductions.rlhf.rlhf import (Config, Feedback, Labeller, Preferences, RewardEnsemble, build, disagreement, fit,
                                     label_schedule, oracle_labels, ppo_config, preference_loss, preference_probability,
                                     random_policy_segments, register_env, renormalise, select_queries, train)


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


# -- the wiring to the project's PPO ------------------------------------------------------------------
def _learned_feedback(cfg: Config, seed: int = 0):
    """A Feedback whose ensemble has been fit once on random-policy labels (as before RL)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ens = RewardEnsemble(2 + 10, cfg.ensemble, cfg.rm_hidden)
    labeller = Labeller(ens, cfg, QuietRun(seed=seed), rng)
    pool = random_policy_segments(cfg, 16, seed, rng)
    labeller.ask(pool, 8, disagreement_queries=False)
    labeller.refit(0, pool, 5)
    return Feedback(cfg, 10, labeller, QuietRun(seed=seed))


def _rollout(env, seed: int, steps: int):
    obs, _ = env.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, 2)).astype(np.float32)
    out = []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((a, obs, r, term or trunc, info))
        if term or trunc:
            env.reset()
    return out


def test_registered_env_pays_the_ensembles_normalised_prediction_and_the_oracle_sees_true_returns():
    import gymnasium as gym
    cfg = Config(normalize=False, ensemble=2, segment_length=25, labels=40, refit_every=10**9)
    fb = _learned_feedback(cfg)
    env_id = register_env(cfg, fb)
    try:
        env = gym.make(env_id)
        assert env.unwrapped.__class__.__name__ == "ReacherEnv" and env.get_wrapper_attr("feedback") is fb
        wrapped = _rollout(env, 5, 100)
    finally:
        del gym.registry[env_id]
    plain = _rollout(gym.make("Reacher-v5"), 5, 100)
    ens = fb.labeller.ensemble
    for (a, obs, r, _, info), (_, obs0, r0, _, _) in zip(wrapped, plain):
        assert np.array_equal(obs, obs0) and info["true_reward"] == r0
        x = torch.as_tensor(np.concatenate([a, obs]).astype(np.float32))
        with torch.no_grad():  # the mean over members of (raw - shift) / scale, written out
            naive = sum((m.net((x - m.in_mean) / m.in_std) - m.out_shift) / m.out_scale for m in ens.members) / 2
        assert r == pytest.approx(naive.item(), rel=1e-5, abs=1e-6) and r != pytest.approx(r0)
    # two 50-step episodes, each cut into two 25-step segments whose true returns are the env's
    true = [r0 for _, _, r0, _, _ in plain]
    assert fb.recent.true_returns == pytest.approx([sum(true[i:i + 25]) for i in (0, 25, 50, 75)])
    assert fb.steps == 100


def test_normalisation_is_vecnormalizes_within_an_episode():
    """Observation and return normalisation against SB3's VecNormalize on the same env, seed and actions."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    cfg = Config(reward="true", normalize=True)
    fb = Feedback(cfg, 10, None, QuietRun())
    env_id = register_env(cfg, fb)
    try:
        ours = _rollout(gym.make(env_id), 9, 45)
    finally:
        del gym.registry[env_id]
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Reacher-v5")]), gamma=cfg.gamma, clip_obs=10.0)
    venv.seed(9)
    venv.reset()
    for a, obs, r, _, _ in ours:
        obs_ref, r_ref, _, _ = venv.step(a[None])
        assert np.allclose(obs, obs_ref[0], atol=1e-5) and r == pytest.approx(float(r_ref[0]), rel=1e-5)
    assert np.allclose(fb.obs_rms.mean, venv.obs_rms.mean) and fb.ret_rms.var == pytest.approx(venv.ret_rms.var)


def test_refits_follow_the_label_schedule_and_all_envs_share_the_labeller():
    cfg = Config(env_id="Reacher-v5", total_steps=1536, num_envs=2, num_steps=128, epochs=1, labels=24,
                 refit_every=256, rm_steps=2, rm_pretrain_steps=2, ensemble=2, segment_length=25)
    logged = []

    class Run(QuietRun):
        def log(self, step, **values):
            logged.append((step, values))

    agent = train(cfg, Run(seed=4))
    sched = label_schedule(cfg)
    assert agent.feedback.refits == [t for t, _ in sched[1:]]
    labels = [(step, v["labels"]) for step, v in logged if "labels" in v]
    assert labels == [(t, float(sum(n for _, n in sched[:i + 1]))) for i, (t, _) in enumerate(sched)]
    assert agent.feedback.steps == cfg.total_steps  # the two actors' steps, counted by the one Feedback
    true_returns = [v["true_return"] for _, v in logged if "true_return" in v]
    assert len(true_returns) == cfg.total_steps // 50 and all(r < 0 for r in true_returns)


def test_true_reward_arm_is_plain_ppo_train_on_the_same_config_and_seed():
    """Without normalisation the true-reward arm's env is the task itself: its policy is exactly the
    one `ppo.train` learns on the task's own env id with the same config and seed."""
    cfg = Config(env_id="Reacher-v5", total_steps=512, num_steps=256, epochs=2, reward="true", normalize=False)
    torch.manual_seed(6)
    ours = train(cfg, QuietRun(seed=6))
    torch.manual_seed(6)
    plain = ppo_paper.train(ppo_config(cfg), QuietRun(seed=6))
    ref = plain.state_dict()
    assert ours.policy.state_dict().keys() == ref.keys()
    assert all(torch.equal(v, ref[k]) for k, v in ours.policy.state_dict().items())
    # and a learned-reward arm on the same seed trains a different policy from the same initialisation
    torch.manual_seed(6)
    init = ppo_paper.build(ppo_config(cfg)).state_dict()
    torch.manual_seed(6)
    learned = train(Config(**{**cfg.__dict__, "reward": "learned", "labels": 8, "refit_every": 256, "rm_steps": 2,
                              "rm_pretrain_steps": 2, "ensemble": 2}), QuietRun(seed=6))
    assert not torch.equal(learned.policy.state_dict()["pi_net.0.weight"], ref["pi_net.0.weight"])
    torch.manual_seed(6)
    assert torch.equal(ppo_paper.build(ppo_config(cfg)).state_dict()["pi_net.0.weight"], init["pi_net.0.weight"])
