"""The mini tier's comparison arms: SAC with a fixed temperature (the temperature really stays
fixed, through sac.train's own loop) and SB3's TD3 (our hyper-parameters reach SB3's object)."""

import math

import numpy as np
import pytest
import torch

from evals.contract import QuietRun
from reproductions.sac import fixed_temperature, sac, td3_baseline


def _f32_log(x: float) -> float:
    return torch.tensor(math.log(x), dtype=torch.float32).item()


def _batch(n=32, obs_dim=3, act_dim=1):
    return {"obs": torch.randn(n, obs_dim), "actions": torch.rand(n, act_dim) * 2 - 1, "rewards": torch.randn(n),
            "next_obs": torch.randn(n, obs_dim), "terminated": torch.zeros(n)}


def test_fixed_temperature_default_is_the_2018_reward_scale_5():
    assert fixed_temperature.Config().init_alpha == pytest.approx(1 / 5)


def test_fixed_learner_keeps_alpha_bit_identical_while_the_learned_one_moves():
    torch.manual_seed(0)
    cfg = fixed_temperature.Config(hidden=16, lr=1e-2)
    fixed_agent, learned_agent = sac.build(cfg), sac.build(cfg)
    learned_agent.load_state_dict(fixed_agent.state_dict())
    fixed = fixed_temperature.FixedTemperatureLearner(fixed_agent, cfg)
    learned = sac.Learner(learned_agent, cfg)
    actor_before = [p.detach().clone() for p in fixed_agent.actor.parameters()]
    for _ in range(20):
        batch = _batch()
        out = fixed.update(batch)
        learned.update(batch)
        assert out["alpha"].item() == pytest.approx(0.2)
    assert fixed_agent.log_alpha.item() == _f32_log(0.2)             # not one bit moved
    assert learned_agent.log_alpha.item() != pytest.approx(math.log(0.2), abs=1e-3)  # the reference does move
    # ... and everything else still learns
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, fixed_agent.actor.parameters()))


def test_fixed_temperature_enters_the_soft_target_as_alpha():
    """The critic's regression target uses the fixed alpha: recompute eq. (5)-(6) by hand with it."""
    torch.manual_seed(1)
    cfg = fixed_temperature.Config(hidden=16, init_alpha=0.37)
    agent = sac.build(cfg)
    learner = fixed_temperature.FixedTemperatureLearner(agent, cfg)
    batch = _batch()
    with torch.random.fork_rng():
        next_a, next_logp = agent.actor.sample(batch["next_obs"])
        q1, q2 = agent.critic_target(batch["next_obs"], next_a)
        y = batch["rewards"] + cfg.gamma * (torch.min(q1, q2) - 0.37 * next_logp)
        c1, c2 = agent.critic(batch["obs"], batch["actions"])
        expected = 0.5 * (((c1 - y) ** 2).mean() + ((c2 - y) ** 2).mean())
    assert learner.update(batch)["critic_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_fixed_train_runs_sac_train_with_the_fixed_learner_and_restores_it():
    cfg = fixed_temperature.Config(total_steps=260, learning_starts=100, batch_size=16, hidden=16, init_alpha=0.5)
    agent = fixed_temperature.train(cfg, QuietRun(seed=3))
    assert agent.log_alpha.item() == _f32_log(0.5)                   # 160 updates, alpha unchanged
    assert sac.Learner is not fixed_temperature.FixedTemperatureLearner  # the loop's name is restored
    learned = sac.train(sac.Config(total_steps=260, learning_starts=100, batch_size=16, hidden=16, init_alpha=0.5),
                        QuietRun(seed=3))
    assert learned.log_alpha.item() != _f32_log(0.5)                 # while sac.train alone learns it


def test_td3_hyper_parameters_reach_sb3():
    cfg = td3_baseline.Config(env_id="InvertedDoublePendulum-v5", total_steps=5000, learning_starts=700,
                              batch_size=64, hidden=32, lr=5e-4, tau=0.01, gamma=0.98, policy_delay=3,
                              target_policy_noise=0.3, target_noise_clip=0.4, exploration_noise=0.15)
    model = td3_baseline.build(cfg, seed=4).model
    assert (model.learning_rate, model.batch_size, model.tau, model.gamma) == (5e-4, 64, 0.01, 0.98)
    assert (model.learning_starts, model.buffer_size, model.train_freq.frequency, model.gradient_steps) == (700, 5000, 1, 1)
    assert (model.policy_delay, model.target_policy_noise, model.target_noise_clip) == (3, 0.3, 0.4)
    assert np.allclose(model.action_noise._sigma, [0.15]) and np.allclose(model.action_noise._mu, [0.0])
    linear = [m for m in model.policy.actor.mu.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [32, 32, 1]
    critic = [m for m in model.policy.critic.qf0.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in critic] == [32, 32, 1] and len(model.policy.critic.q_networks) == 2
    for group in model.actor.optimizer.param_groups + model.critic.optimizer.param_groups:
        assert group["lr"] == 5e-4


def test_td3_defaults_are_the_td3_papers():
    cfg = td3_baseline.Config()
    assert (cfg.policy_delay, cfg.target_policy_noise, cfg.target_noise_clip, cfg.exploration_noise) == (2, 0.2, 0.5, 0.1)
    assert (cfg.hidden, cfg.lr, cfg.batch_size) == (256, 3e-4, 256)  # the same as our SAC's
