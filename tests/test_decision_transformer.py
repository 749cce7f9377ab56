"""Decision Transformer: returns-to-go, the token order, causality and the timestep embedding, the
action-regression loss and %BC's data against naive loops; the GPT trunk against the project's GPT;
the return-to-go decrement at evaluation; the Minari round trip and the normalised score against
`minari.get_normalized_score`; deterministic, cached data generation; the evaluator's derive."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from evals.evaluators import REGISTRY, _load_builtin, derived_metrics
from reproductions.decision_transformer import datasets as D
from reproductions.decision_transformer.dt import (Batches, Config, DecisionTransformer, action_loss, build,
                                                   interleave, returns_to_go, top_percent)
from reproductions.transformer.gpt import GPT, GPTConfig, NoPositions

minari = pytest.importorskip("minari")

TINY_GEN = dict(env_id="Pendulum-v1", expert_steps=300, medium_score=-1e9, snapshot_every=100, learning_starts=100, sac_hidden=16,
                sac_batch=16, episodes=2, reference_episodes=2, seed=0)


def test_returns_to_go_is_the_naive_sum_of_future_rewards():
    r = np.random.default_rng(0).normal(size=37)
    naive = [sum(r[t:]) for t in range(len(r))]
    assert np.allclose(returns_to_go(r), naive, atol=1e-12)


def test_tokens_interleave_return_state_action_per_timestep():
    B, T, h = 2, 4, 3
    r, s, a = torch.randn(B, T, h), torch.randn(B, T, h), torch.randn(B, T, h)
    got = interleave(r, s, a)
    naive = torch.stack([x for t in range(T) for x in (r[:, t], s[:, t], a[:, t])], dim=1)
    assert torch.equal(got, naive)


def small_dt(**kw) -> DecisionTransformer:
    torch.manual_seed(0)
    cfg = Config(context=5, n_layer=2, n_head=2, n_embd=16, dropout=0.0, max_ep_len=50, **kw)
    return DecisionTransformer(state_dim=3, act_dim=2, cfg=cfg).eval()


def inputs(B=2, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, 1, generator=g), torch.randn(B, T, 3, generator=g), torch.rand(B, T, 2, generator=g) * 2 - 1,
            torch.randint(0, 50, (B, T), generator=g))


def test_action_at_t_sees_returns_states_and_past_actions_only():
    m = small_dt()
    r, s, a, t = inputs()
    base = m(r, s, a, t)
    k = 2
    # a_k and everything after s_k leave the prediction of a_k (and earlier) unchanged ...
    a2, r2, s2 = a.clone(), r.clone(), s.clone()
    a2[:, k:] += 1.0
    r2[:, k + 1:] += 1.0
    s2[:, k + 1:] += 1.0
    out = m(r2, s2, a2, t)
    assert torch.allclose(out[:, :k + 1], base[:, :k + 1], atol=1e-6)
    # ... while R_hat_k, s_k, a_{k-1} and the timestep of k all change it
    for which in ("r", "s", "a", "t"):
        rr, ss, aa, tt = r.clone(), s.clone(), a.clone(), t.clone()
        if which == "r":
            rr[:, k] += 1.0
        elif which == "s":
            ss[:, k] += 1.0
        elif which == "a":
            aa[:, k - 1] += 1.0
        else:
            tt[:, k] = (tt[:, k] + 7) % 50
        out = m(rr, ss, aa, tt)
        assert not torch.allclose(out[:, k], base[:, k], atol=1e-5), which


def test_timestep_embedding_is_shared_by_the_three_tokens_of_a_step_and_replaces_positions():
    m = small_dt()
    r, s, a, t = inputs(B=1)
    # same timesteps, same inputs: shifting the window's place in the sequence changes nothing the GPT
    # could see as a position (NoPositions): the first step alone gives the same prediction at any offset
    one = m(r[:, :1], s[:, :1], a[:, :1], t[:, :1])
    assert torch.allclose(one[0, 0], m(r, s, a, t)[0, 0], atol=1e-6)
    assert isinstance(m.gpt.position, NoPositions)


def test_right_padding_does_not_change_the_real_timesteps():
    m = small_dt()
    r, s, a, t = inputs()
    n = 3
    out = m(r, s, a, t)[:, :n]
    r2, s2, a2 = r.clone(), s.clone(), a.clone()
    r2[:, n:], s2[:, n:], a2[:, n:] = 9.0, -9.0, 0.5
    assert torch.allclose(m(r2, s2, a2, t)[:, :n], out, atol=1e-6)


def test_trunk_is_the_project_gpt_forward_without_its_head():
    torch.manual_seed(1)
    gpt = GPT(GPTConfig(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=16, bias=True), position=NoPositions()).eval()
    m = small_dt()
    m.gpt = gpt
    idx = torch.randint(0, 11, (2, 12))
    logits, _ = gpt(idx)
    assert torch.allclose(gpt.lm_head(m.trunk(gpt.wte(idx))), logits, atol=1e-5)


def test_action_loss_is_the_naive_masked_mean_squared_error():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    terms = [((pred[b, t] - target[b, t]) ** 2).mean().item() for b in range(3) for t in range(4) if mask[b, t]]
    assert action_loss(pred, target, mask).item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def episode(rets: list[float], length: int) -> D.Episode:
    rew = np.full(length, 0.0)
    rew[0] = rets
    return D.Episode(np.zeros((length + 1, 3), np.float32), np.zeros((length, 1), np.float32), rew,
                     np.zeros(length, bool), np.zeros(length, bool))


def test_percent_bc_keeps_the_best_episodes_until_x_percent_of_the_timesteps():
    eps = [episode(r, n) for r, n in ((5, 10), (9, 10), (1, 30), (7, 20), (3, 30))]  # 100 timesteps
    assert [e.ret for e in top_percent(eps, 10)] == [9]
    assert [e.ret for e in top_percent(eps, 25)] == [9, 7]
    assert [e.ret for e in top_percent(eps, 40)] == [9, 7, 5]
    assert len(top_percent(eps, 100)) == 5


def test_batches_are_slices_of_episodes_with_their_returns_to_go_and_timesteps():
    rng = np.random.default_rng(0)
    eps = []
    for n in (7, 30):
        e = episode(0.0, n)
        e.observations[:] = rng.normal(size=e.observations.shape)
        e.actions[:] = rng.uniform(-2, 2, size=e.actions.shape)
        e.rewards[:] = rng.normal(size=n)
        eps.append(e)
    cfg = Config(context=10, return_scale=10.0)
    mean, std = np.zeros(3), np.ones(3)
    b = Batches(eps, mean, std, np.array([-2.0]), np.array([2.0]), cfg, np.random.default_rng(1)).windows(50)
    for i in range(50):
        n = int(b["mask"][i].sum())
        t0 = int(b["timesteps"][i, 0])
        ep = next(e for e in eps if len(e.rewards) >= t0 + n and np.allclose(e.observations[t0, :], b["states"][i, 0]))
        assert n == min(10, len(ep.rewards) - t0)
        assert np.allclose(b["rtg"][i, :n, 0], [sum(ep.rewards[t:]) / 10 for t in range(t0, t0 + n)], atol=1e-5)
        assert np.allclose(b["actions"][i, :n, 0], ep.actions[t0:t0 + n, 0] / 2, atol=1e-6)
        assert b["timesteps"][i, :n].tolist() == list(range(t0, t0 + n))
        assert not b["mask"][i, n:].any()


def test_evaluation_decrements_the_return_to_go_by_each_reward():
    cfg = Config(env_id="Pendulum-v1", context=4, n_layer=1, n_head=1, n_embd=8, return_scale=100.0)
    agent = build(cfg)
    seen = []
    forward = agent.model.forward

    def spy(rtg, states, actions, timesteps):
        seen.append((rtg[0, :, 0].tolist(), timesteps[0].tolist()))
        return forward(rtg, states, actions, timesteps)

    agent.model.forward = spy
    policy = agent.begin_episode(50.0)
    rewards = [None, -3.0, -5.0, 2.0, -1.0, -4.0]
    for r in rewards:
        policy(np.zeros(3, np.float32), r)
    rtg = [0.5]
    for r in rewards[1:]:
        rtg.append(rtg[-1] - r / 100.0)
    assert seen[-1][0] == pytest.approx(rtg[-4:])          # the last K of R_hat_1 - r_1 - ...
    assert seen[-1][1] == [2, 3, 4, 5]
    assert seen[1][0] == pytest.approx(rtg[:2])


def test_minari_round_trip_and_normalised_score(tmp_path):
    folder = D.ensure(D.Generation(**TINY_GEN), tmp_path)
    prov = D.provenance(folder)
    g = D.Generation(**TINY_GEN)
    for q in D.QUALITIES:
        path = D.dataset_path(folder, D.dataset_id(g, q))
        eps, meta = D.read_minari(path)
        assert D.content_sha256(eps) == prov["datasets"][q]["sha256"]
        assert prov["datasets"][q]["env_steps"] == sum(len(e.rewards) for e in eps)
        for e in eps:
            assert len(e.observations) == len(e.actions) + 1 == len(e.rewards) + 1
    ds = minari.MinariDataset(str(D.dataset_path(folder, D.dataset_id(g, "medium"))))
    returns = np.array([-900.0, -300.0])
    lo, hi = prov["ref_min_score"], prov["ref_max_score"]
    assert np.allclose(100 * minari.get_normalized_score(ds, returns), 100 * (returns - lo) / (hi - lo))
    me, _ = D.read_minari(D.dataset_path(folder, D.dataset_id(g, "medium-expert")))
    assert len(me) == prov["datasets"]["medium"]["episodes"] + prov["datasets"]["expert"]["episodes"]
    assert prov["datasets"]["medium-replay"]["env_steps"] == 200  # the episodes SAC finished by its medium stop


def test_generation_is_deterministic_cached_and_leaves_the_random_streams_alone(tmp_path):
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    a = D.ensure(D.Generation(**TINY_GEN), tmp_path / "a")
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]
    b = D.ensure(D.Generation(**TINY_GEN), tmp_path / "b")
    sha = lambda f: {q: d["sha256"] for q, d in D.provenance(f)["datasets"].items()}  # noqa: E731
    assert sha(a) == sha(b)
    mtime = (a / "provenance.json").stat().st_mtime_ns
    assert D.ensure(D.Generation(**TINY_GEN), tmp_path / "a") == a and (a / "provenance.json").stat().st_mtime_ns == mtime


def test_conditioned_return_derive_recomputes_the_means_correlation_and_slope():
    _load_builtin()
    from evals.evaluators.conditioned_return import derive, pearson, slope
    from evals.record import EvalResult
    x, y = [0.0, 50.0, 100.0, 12.5], [10.0, 45.0, 80.0, 20.0]
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert slope(x, y) == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-12)
    samples = {"return": [1.0, 2.0], "achieved_score_t0": [10.0, 20.0], "achieved_score_t50": [40.0, 60.0],
               "achieved_score_t100": [70.0, 80.0]}
    res = EvalResult(evaluator="conditioned_return", version=REGISTRY["conditioned_return"].version, metrics={},
                     samples=samples)
    out = derived_metrics(res)
    assert out == derive(res)
    assert out["achieved_score_t50"] == pytest.approx(50.0) and out["achieved_score_t100"] == pytest.approx(75.0)
    assert out["target_corr"] == pytest.approx(np.corrcoef([0, 50, 100], [15, 50, 75])[0, 1], rel=1e-12)
    assert out["target_slope"] == pytest.approx(0.6, rel=1e-12)
    # a flat curve with a tiny rise correlates perfectly; the slope says it does not track
    flat = derive(EvalResult(evaluator="conditioned_return", version=2, metrics={},
                             samples={"achieved_score_t0": [30.0], "achieved_score_t100": [30.5]}))
    assert flat["target_corr"] == pytest.approx(1.0) and flat["target_slope"] == pytest.approx(0.005)


def test_conditioned_return_keeps_one_sample_per_episode_seed_and_skips_the_sweep_for_bc():
    _load_builtin()
    ev = REGISTRY["conditioned_return"]
    opts = ev.options.model_validate({"episodes": 2, "sweep_scores": [0, 100], "max_episode_steps": 5})
    for method in ("dt", "bc"):
        cfg = Config(env_id="Pendulum-v1", method=method, context=3, n_layer=1, n_embd=8)
        agent = build(cfg)
        agent.refs.copy_(torch.tensor([-1000.0, -100.0], dtype=torch.float64))
        res = ev(agent, cfg, opts)
        assert all(len(v) == 2 for v in res.samples.values())
        assert ("target_corr" in res.metrics) == (method == "dt")
        if method == "dt":
            assert res.metrics == pytest.approx(res.metrics | derived_metrics(res))
