"""PPO: the clipped objective, GAE and the loss against direct computations; smoke runs."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from evals import cli
from evals.config import resolve
from evals.record import load_record
from evals.tier_runner import run_one
from evals.spec import load_spec
from reproductions.ppo import ppo


def test_clipped_surrogate_on_hand_made_ratios():
    ratio = torch.tensor([0.5, 1.0, 1.5, 0.5, 1.5, 1.1])
    adv = torch.tensor([1.0, 2.0, 1.0, -1.0, -1.0, -3.0])
    # eps = 0.2: min(r A, clip(r, 0.8, 1.2) A) per sample, then the mean
    by_hand = [min(0.5, 0.8), 2.0, min(1.5, 1.2), min(-0.5, -0.8), min(-1.5, -1.2), min(-3.3, -3.3)]
    assert ppo.clipped_surrogate(ratio, adv, 0.2).item() == pytest.approx(np.mean(by_hand))


def test_clipping_removes_the_incentive_past_the_trust_region():
    logp_old = torch.zeros(4)
    logp_new = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    ppo.clipped_surrogate(ppo.probability_ratio(logp_new, logp_old), adv, 0.2).backward()
    # Past 1 + eps with A > 0, or below 1 - eps with A < 0, the objective is flat: no gradient.
    # On the pessimistic side (r = 1.5 with A < 0, r = 0.5 with A > 0) the gradient is r A / n.
    assert torch.allclose(logp_new.grad, torch.tensor([0.0, -1.5, 0.5, 0.0]) / 4)


def _gae_loop(rewards, values, dones, last_value, gamma, lam):
    """Eq. (11)-(12) literally: A_t = sum_l (gamma lambda)^l delta_{t+l}, cut at the episode's end."""
    T = len(rewards)
    nxt = list(values[1:]) + [last_value]
    deltas = [rewards[t] + gamma * nxt[t] * (1 - dones[t]) - values[t] for t in range(T)]
    out = []
    for t in range(T):
        total, discount = 0.0, 1.0
        for k in range(t, T):
            total += discount * deltas[k]
            if dones[k]:
                break
            discount *= gamma * lam
        out.append(total)
    return out


def test_gae_matches_a_plain_python_loop():
    rng = np.random.default_rng(0)
    T, N = 12, 3
    rewards, values = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    dones = (rng.random((T, N)) < 0.2).astype(float)
    last = rng.normal(size=N)
    ours = ppo.gae(*(torch.tensor(x, dtype=torch.float64) for x in (rewards, values, dones, last)), 0.97, 0.9)
    for i in range(N):
        ref = _gae_loop(rewards[:, i], values[:, i], dones[:, i], last[i], 0.97, 0.9)
        assert np.allclose(ours[:, i].numpy(), ref)


def test_gae_limits_are_td_error_and_monte_carlo():
    r, v = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[0.5], [0.1], [0.2]])
    d, last = torch.tensor([[0.0], [0.0], [1.0]]), torch.tensor([9.0])
    td = ppo.gae(r, v, d, last, 0.9, 0.0)
    assert torch.allclose(td[:, 0], torch.tensor([1 + 0.9 * 0.1 - 0.5, 2 + 0.9 * 0.2 - 0.1, 3 - 0.2]))
    mc = ppo.gae(r, v, d, last, 0.9, 1.0) + v  # lambda = 1: the discounted return to the episode's end
    assert torch.allclose(mc[:, 0], torch.tensor([1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3.0]))


def test_loss_is_eq9_and_an_update_makes_advantaged_actions_likelier():
    torch.manual_seed(0)
    cfg = ppo.Config(env_id="CartPole-v1", hidden=16, vf_coef=0.7, ent_coef=0.05, normalize_advantage=False)
    agent = ppo.build(cfg)
    learner = ppo.Learner(agent, cfg)
    obs = torch.randn(64, 4)
    actions = torch.zeros(64, dtype=torch.long)  # action 0 was good, everywhere
    with torch.no_grad():
        dist, _ = agent(obs)
        logp = agent.log_prob(dist, actions)
    mb = {"obs": obs, "actions": actions, "logp": logp, "advantages": torch.ones(64), "returns": torch.zeros(64)}
    loss, stats = learner.minibatch_loss(mb, 0.2)
    # At the old policy the ratio is 1, so L^CLIP = mean(A) = 1.
    expected = -(1.0 - 0.7 * stats["value_loss"] + 0.05 * stats["entropy"])
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    before = dist.probs[:, 0].mean().item()
    learner.update(mb, alpha=1.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = agent(obs)[0].probs[:, 0].mean().item()
    assert after > before


def test_anneal_scales_the_step_size():
    cfg = ppo.Config(env_id="CartPole-v1", hidden=8, epochs=1, minibatch_size=4, lr=1e-3)
    learner = ppo.Learner(ppo.build(cfg), cfg)
    batch = {"obs": torch.randn(4, 4), "actions": torch.zeros(4, dtype=torch.long), "logp": torch.full((4,), -0.7),
             "advantages": torch.randn(4), "returns": torch.randn(4)}
    learner.update(batch, alpha=0.25, generator=torch.Generator().manual_seed(0))
    assert learner.opt.param_groups[0]["lr"] == pytest.approx(2.5e-4)


def test_actions_deterministic_and_sampled():
    cfg = ppo.Config(env_id="Hopper-v5", hidden=8)
    agent = ppo.build(cfg)
    obs = np.zeros(11, dtype=np.float32)
    with torch.no_grad():
        agent.log_std.fill_(3.0)  # wide: samples often leave the box and must be clipped
        mean = agent(torch.as_tensor(obs).unsqueeze(0))[0].mean[0].numpy()
    assert np.allclose(agent.act(obs, deterministic=True), np.clip(mean, -1, 1))
    samples = np.array([agent.act(obs, deterministic=False) for _ in range(50)])
    assert samples.shape == (50, 3) and (np.abs(samples) <= 1.0).all() and samples.std() > 0
    discrete = ppo.build(ppo.Config(env_id="CartPole-v1", hidden=8))
    assert discrete.act(np.zeros(4, dtype=np.float32)) in (0, 1)


def smoke(arm, **overrides):
    return resolve(load_spec("ppo"), "smoke", arm, 1, overrides)


@pytest.mark.parametrize("arm", ["ours", "sb3", "ours_hopper"])
def test_smoke_runs_write_complete_records(run_opts, arm):
    rec = load_record(run_one(smoke(arm), run_opts))
    assert rec.status == "ok", rec.error
    assert rec.evaluations[0].evaluator == "rl_return" and len(rec.evaluations[0].samples["return"]) == 2
    assert "value_loss" in rec.curves
    if arm == "ours":
        assert "train_return" in rec.curves and "reproductions/ppo/ppo.py" in rec.provenance.source_files


class ConstantReward(gym.Env):
    """Reward 1 every step, never terminal: only its time limit ends an episode."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), {}

    def step(self, action):
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), 1.0, False, False, {}


def test_time_limits_are_bootstrapped_not_terminal(run_opts, monkeypatch):
    """At a time limit the reward gets gamma * V(last state) and the episode is cut for GAE."""
    gym.register(id="ConstantReward-v0", entry_point=ConstantReward, max_episode_steps=10)
    seen = []
    real_gae = ppo.gae

    def spy(rewards, values, dones, *args, **kw):
        seen.append((rewards.clone(), dones.clone()))
        return real_gae(rewards, values, dones, *args, **kw)

    monkeypatch.setattr(ppo, "gae", spy)
    run_one(resolve(load_spec("ppo"), "smoke", "ours", 1, {"env_id": "ConstantReward-v0", "total_steps": 32,
                                                            "num_envs": 1, "num_steps": 32}), run_opts)
    rewards, dones = seen[0][0][:, 0], seen[0][1][:, 0]
    cut = torch.tensor([t % 10 == 9 for t in range(32)])
    assert torch.equal(dones, cut.float())
    assert torch.all(rewards[~cut] == 1.0) and torch.all(rewards[cut] != 1.0)


def test_full_tier_dry_run(capsys):
    assert cli.main(["reproduce", "ppo", "--tier", "full", "--dry-run", "--arms", "ours_hopper,ours_pong"]) == 0
    out = capsys.readouterr().out
    assert out.count("built ActorCritic") == 2 and "dry run of ppo/full: ready" in out
