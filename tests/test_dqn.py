"""DQN: its math against direct computations, the Atari pipeline, the evaluator, smoke runs."""

import copy
import dataclasses
import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium.wrappers import ClipReward
from stable_baselines3.common.logger import Logger

from evals import cli
from evals.config import resolve
from evals.evaluators import resolve_evaluator
from evals.record import load_record
from evals.tier_runner import run_one
from evals.evaluators import EvaluatorSpec
from evals.spec import load_spec
from evals.tasks.atari import is_atari, make_atari
from evals.tasks import minatar
from reproductions.common.conv_torso import ConvTorso
from reproductions.dqn import dqn, random_policy, sb3_baseline
from tests.factories import interrupt


def test_q_target_masks_terminals_against_a_loop():
    torch.manual_seed(0)
    r, d = torch.randn(6), torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    next_q = torch.randn(6, 3)
    y = dqn.q_target(r, d, next_q, gamma=0.9)
    for i in range(6):
        expected = r[i].item() if d[i] else r[i].item() + 0.9 * max(next_q[i].tolist())
        assert y[i].item() == pytest.approx(expected, abs=1e-6)


def test_huber_loss_clips_the_error_in_the_gradient():
    q = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    y = torch.tensor([0.5, 3.0, -4.0])
    dqn.td_loss(q, y, "huber").backward()
    # d/dq of the mean Huber loss: -(y - q) inside [-1, 1], -sign(y - q) outside; divided by n.
    assert torch.allclose(q.grad, torch.tensor([-0.5, -1.0, 1.0]) / 3)
    assert dqn.td_loss(q, y, "mse").item() == pytest.approx((0.25 + 9 + 16) / 3)
    with pytest.raises(ValueError, match="loss"):
        dqn.td_loss(q, y, "l1")


def test_epsilon_is_annealed_linearly_then_fixed():
    cfg = dqn.Config(eps_start=1.0, eps_end=0.1, exploration_steps=1000)
    assert dqn.epsilon_at(0, cfg) == 1.0
    assert dqn.epsilon_at(500, cfg) == pytest.approx(0.55)
    assert dqn.epsilon_at(1000, cfg) == pytest.approx(0.1)
    assert dqn.epsilon_at(10**7, cfg) == pytest.approx(0.1)


def test_update_moves_q_towards_the_target_and_leaves_the_target_network():
    torch.manual_seed(0)
    cfg = dqn.Config(env_id="CartPole-v1", hidden=16, optimizer="adam", lr=1e-2, loss="mse")
    agent = dqn.build(cfg)
    learner = dqn.Learner(agent, cfg)
    batch = {"obs": torch.randn(32, 4), "actions": torch.randint(2, (32,)), "rewards": torch.randn(32),
             "next_obs": torch.randn(32, 4), "terminated": torch.ones(32)}  # all terminal: y = r
    before = {k: v.clone() for k, v in agent.q_target.state_dict().items()}
    first = learner.update(batch)["loss"].item()
    for _ in range(200):
        last = learner.update(batch)["loss"].item()
    assert last < 0.1 * first
    assert all(torch.equal(v, agent.q_target.state_dict()[k]) for k, v in before.items())
    learner.sync_target()
    assert all(torch.equal(v, agent.q.state_dict()[k]) for k, v in agent.q_target.state_dict().items())


def test_rmsprop_is_the_default_and_adam_an_option():
    agent = dqn.build(dqn.Config(env_id="CartPole-v1", hidden=8))
    assert isinstance(dqn.make_optimizer(agent.q.parameters(), dqn.Config()), torch.optim.RMSprop)
    assert isinstance(dqn.make_optimizer(agent.q.parameters(), dqn.Config(optimizer="adam")), torch.optim.Adam)


# -- the Atari pipeline --------------------------------------------------------------------------
def test_atari_observations_are_four_stacked_84x84_grey_frames():
    assert is_atari("ALE/Pong-v5") and not is_atari("CartPole-v1")
    env = make_atari("ALE/Pong-v5", training=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    obs, *_ = env.step(0)
    assert obs.shape == (4, 84, 84)
    env.close()
    q = dqn.QNetwork((4, 84, 84), 6, hidden=8)
    assert ConvTorso()(torch.as_tensor(obs).unsqueeze(0)).shape == (1, 256)
    assert q(torch.zeros(5, 4, 84, 84, dtype=torch.uint8)).shape == (5, 6)


def _random_play(env, steps, stop=lambda r, term, info: False, seed=0):
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    rewards = []
    for _ in range(steps):
        _, r, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
        rewards.append(r)
        if stop(r, term, info) or trunc:
            return rewards, term, info
    return rewards, False, {}


def test_training_rewards_are_clipped_and_evaluation_scores_are_not():
    # Space Invaders pays 5-30 points per alien: random play scores within a few hundred steps.
    train_env = make_atari("ALE/SpaceInvaders-v5", training=True)
    eval_env = make_atari("ALE/SpaceInvaders-v5", training=False)
    clipped, _, _ = _random_play(train_env, 400)
    raw, _, _ = _random_play(eval_env, 400)
    assert set(clipped) <= {-1.0, 0.0, 1.0} and 1.0 in clipped
    assert max(raw) > 1.0
    assert any(isinstance(w, ClipReward) for w in _wrappers(train_env))
    assert not any(isinstance(w, ClipReward) for w in _wrappers(eval_env))


def _wrappers(env):
    while hasattr(env, "env"):
        yield env
        env = env.env


def test_a_lost_life_ends_the_training_episode_but_not_the_game():
    env = make_atari("ALE/SpaceInvaders-v5", training=True)
    _, terminated, info = _random_play(env, 3000, stop=lambda r, term, info: term)
    assert terminated and info["game_over"] is False and info["lives"] == 2
    frame = info["episode_frame_number"]
    _, info = env.reset()
    assert env.unwrapped.ale.lives() == 2
    assert info["episode_frame_number"] > frame  # the same game went on: no restart


# -- MinAtar -------------------------------------------------------------------------------------
BREAKOUT = "evals.tasks.minatar:MinAtar-Breakout-v1"


def test_minatar_screens_are_minatar_s_own_grid_channel_first():
    """Against MinAtar's own Environment, driven directly with the same seed and actions."""
    import gymnasium as gym
    from minatar import Environment

    env = gym.make(BREAKOUT)
    assert env.observation_space.shape == (4, 10, 10) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 3 and env.spec.max_episode_steps == minatar.MAX_EPISODE_STEPS
    ref = Environment("breakout")
    ref.seed(7)
    ref.reset()
    obs, _ = env.reset(seed=7)
    actions = ref.minimal_action_set()
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert np.array_equal(obs, np.transpose(ref.state(), (2, 0, 1)).astype(np.uint8))
        a = int(rng.integers(3))
        obs, r, term, _, _ = env.step(a)
        r_ref, done_ref = ref.act(actions[a])
        assert (r, term) == (r_ref, done_ref)
        if term:
            ref.seed(8)
            ref.reset()
            ref.last_action = 0
            obs, _ = env.reset(seed=8)
    assert set(np.unique(obs)) <= {0, 1}


def test_minatar_episode_depends_only_on_its_reset_seed():
    import gymnasium as gym

    def play(env, seed):
        env.reset(seed=seed)
        return [env.step(i % 3)[:2] for i in range(30)]

    env = gym.make(BREAKOUT)
    first = [(o.tobytes(), r) for o, r in play(env, 3)]
    play(env, 4)  # whatever came before (the sticky action it left) does not carry over
    again = [(o.tobytes(), r) for o, r in play(env, 3)]
    assert first == again
    assert minatar.is_minatar(BREAKOUT) and not minatar.is_minatar("CartPole-v1") and not is_atari(BREAKOUT)


def test_minatar_network_is_the_minatar_paper_s_scaling():
    """One 3x3 convolution of 16 filters (stride 1) and 128 hidden units (Young and Tian 2019)."""
    cfg = dqn.Config(env_id=BREAKOUT)
    agent = dqn.build(cfg)
    assert isinstance(agent.q.torso, dqn.MinAtarTorso)
    conv, fc, head = 4 * 16 * 3 * 3 + 16, 16 * 8 * 8 * 128 + 128, 128 * 3 + 3
    assert agent.num_parameters() == conv + fc + head
    assert agent.q(torch.ones(5, 4, 10, 10, dtype=torch.uint8)).shape == (5, 3)
    assert isinstance(dqn.image_torso((4, 84, 84)), ConvTorso)
    # SB3's arm acts through the same torso and head
    sb3 = sb3_baseline.build(cfg)
    assert isinstance(sb3.model.q_net.features_extractor.torso, dqn.MinAtarTorso)
    assert sb3.num_parameters() == agent.num_parameters()


def test_mlp_widths_are_cleanrl_s():
    agent = dqn.build(dqn.Config(env_id="CartPole-v1", hidden=120, hidden2=84))
    assert agent.num_parameters() == 4 * 120 + 120 + 120 * 84 + 84 + 84 * 2 + 2
    sb3 = sb3_baseline.build(dqn.Config(env_id="CartPole-v1", hidden=120, hidden2=84))
    assert sb3.num_parameters() == agent.num_parameters()


# -- the SB3 arms: the config's hyper-parameters, and on CartPole the config's loss ---------------
def _mini(arm):
    return resolve(load_spec("dqn"), "mini", arm, 1, {})


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_sb3_hyper_parameters_are_the_config_s(loss):
    cfg = dataclasses.replace(_mini("ours").config, loss=loss)  # CleanRL's CartPole setting, either loss
    m = sb3_baseline.build(cfg).model
    assert (m.learning_rate, m.buffer_size, m.learning_starts, m.batch_size, m.gamma, m.tau) == (
        cfg.lr, cfg.buffer_size, cfg.learning_starts, cfg.batch_size, cfg.gamma, 1.0)
    assert (m.train_freq.frequency, m.train_freq.unit.value, m.gradient_steps) == (cfg.train_freq, "step", cfg.gradient_steps)
    assert m.target_update_interval == cfg.target_update_interval and m.max_grad_norm == math.inf
    for step in [0, 10_000, 125_000, 250_000, 400_000]:  # SB3's schedule takes the fraction of training left
        assert m.exploration_schedule(1 - step / cfg.total_steps) == pytest.approx(dqn.epsilon_at(step, cfg))
    assert type(m.policy.optimizer) is torch.optim.Adam and m.policy.optimizer.defaults["lr"] == cfg.lr


def test_sb3_cartpole_arm_runs_ours_setting_loss_included():
    # v2's first sb3 records ran SB3's Huber loss under this setting (tuned for the squared error):
    # the Q-values diverged and every seed scored 9.4, a one-action policy.
    ours, sb3 = _mini("ours"), _mini("sb3")
    assert sb3.config == ours.config and ours.config.loss == "mse"
    assert isinstance(importlib.import_module(sb3.module).build(sb3.config).model, sb3_baseline.SquaredErrorDQN)


def _sb3_with_memory(loss):
    cfg = dqn.Config(env_id="CartPole-v1", hidden=16, optimizer="adam", lr=1e-2, batch_size=32, learning_starts=0,
                     total_steps=1000, loss=loss)
    m = sb3_baseline.build(cfg, seed=0).model
    m.set_logger(Logger(None, []))
    rng = np.random.default_rng(0)
    for _ in range(64):  # rewards large enough that the Huber loss and the squared error differ
        m.replay_buffer.add(rng.normal(size=(1, 4)).astype(np.float32), rng.normal(size=(1, 4)).astype(np.float32),
                            rng.integers(2, size=(1, 1)), rng.normal(0, 5, size=1).astype(np.float32),
                            rng.random(1) < 0.2, [{}])
    return m


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_sb3_update_is_eq3_with_the_config_s_loss(loss):
    m = _sb3_with_memory(loss)
    assert type(m) is (sb3_baseline.SquaredErrorDQN if loss == "mse" else sb3_baseline.SB3DQN)
    q, q_target = copy.deepcopy(m.q_net), copy.deepcopy(m.q_net_target)
    np.random.seed(0)
    batch = m.replay_buffer.sample(32)
    np.random.seed(0)  # SB3 samples with numpy's global generator: the same batch
    m.train(gradient_steps=1, batch_size=32)
    with torch.no_grad():
        y = dqn.q_target(batch.rewards.squeeze(1), batch.dones.squeeze(1), q_target(batch.next_observations), 0.99)
    q_taken = q(batch.observations).gather(1, batch.actions.long()).squeeze(1)
    expected = dqn.td_loss(q_taken, y, loss)
    assert m.logger.name_to_value["train/loss"] == pytest.approx(expected.item(), rel=1e-5)
    other = dqn.td_loss(q_taken, y, "huber" if loss == "mse" else "mse")
    assert abs(other.item() - expected.item()) > 1.0  # the two losses are told apart here
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    expected.backward()
    opt.step()
    for ours, theirs in zip(q.parameters(), m.q_net.parameters(), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)
    with pytest.raises(ValueError, match="config field 'loss': 'l1'"):
        sb3_baseline.build(dqn.Config(env_id="CartPole-v1", loss="l1"))


def test_sb3_arm_runs_the_squared_error_through_the_harness(run_opts):
    job = smoke("sb3", loss="mse")
    assert job.module == "reproductions.dqn.sb3_baseline"
    rec = load_record(run_one(job, run_opts))
    assert rec.status == "ok", rec.error
    assert "loss" in rec.curves and "reproductions/dqn/sb3_baseline.py" in rec.provenance.source_files


def test_random_policy_is_uniform_seeded_and_saved(tmp_path):
    cfg = dqn.Config(env_id=BREAKOUT)
    a = random_policy.build(cfg, seed=3)
    actions = [a.act(np.zeros((4, 10, 10), np.uint8)) for _ in range(3000)]
    counts = np.bincount(actions, minlength=3) / len(actions)
    assert np.allclose(counts, 1 / 3, atol=0.03) and a.num_parameters() == 0
    a.save(tmp_path / "a.safetensors")
    b = random_policy.build(cfg).load(tmp_path / "a.safetensors")
    assert [b.act(None) for _ in range(50)] == actions[:50]  # the same stream from the saved seed
    random_policy.build(cfg, seed=4).save(tmp_path / "c.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "c.safetensors").read_bytes()


def test_evaluator_makes_the_minatar_env_from_the_config():
    ev, opts = _evaluator(episodes=20, epsilon=0.0)
    res = ev(random_policy.build(dqn.Config(env_id=BREAKOUT), seed=1), dqn.Config(env_id=BREAKOUT), opts)
    assert 0 <= res.metrics["return"] < 2 and res.protocol["env_id"] == BREAKOUT
    assert "noop_starts" not in res.protocol  # no Atari pipeline on MinAtar


# -- the evaluator -------------------------------------------------------------------------------
class CountingAgent:
    def __init__(self):
        self.calls = 0

    def act(self, obs, deterministic=True):
        self.calls += 1
        return 0


def _evaluator(**options):
    return resolve_evaluator(EvaluatorSpec(kind="atari_return", **options), "test")


def test_evaluator_epsilon_decides_who_acts_and_is_reproducible():
    cfg = dqn.Config(env_id="CartPole-v1")
    ev, opts = _evaluator(episodes=3, epsilon=0.0)
    agent = CountingAgent()
    res = ev(agent, cfg, opts)
    assert agent.calls == sum(res.samples["episode_length"])  # epsilon 0: the agent takes every action
    ev, opts = _evaluator(episodes=3, epsilon=1.0)
    agent = CountingAgent()
    first = ev(agent, cfg, opts)
    assert agent.calls == 0 and first.protocol["epsilon"] == 1.0
    assert ev(CountingAgent(), cfg, opts).samples == first.samples  # same seeds, same episodes
    assert first.metrics["best_return"] == max(first.samples["return"])


# -- smoke runs through the harness --------------------------------------------------------------
def smoke(arm, **overrides):
    return resolve(load_spec("dqn"), "smoke", arm, 1, overrides)


@pytest.mark.parametrize("arm", ["ours", "sb3", "ours_pong", "sb3_pong", "ours_minatar", "sb3_minatar", "random_minatar"])
def test_smoke_runs_write_complete_records(run_opts, arm):
    rec = load_record(run_one(smoke(arm), run_opts))
    assert rec.status == "ok", rec.error
    ev = rec.evaluations[0]
    assert ev.evaluator == "atari_return" and ev.protocol["epsilon"] == 0.05
    if arm.endswith("pong"):  # a Pong game outlasts the smoke budget: no whole game in the curves
        assert ev.protocol["noop_starts"] == "1..30 no-op actions at reset"
        assert ev.metrics["return"] >= -21
        assert "evals/tasks/atari.py" in rec.provenance.source_files
    elif arm == "random_minatar":
        assert rec.metrics["return"] >= 0 and "evals/tasks/minatar.py" in rec.provenance.source_files
    else:
        assert "train_return" in rec.curves
    if arm == "ours":
        assert "loss" in rec.curves and "reproductions/common/replay.py" in rec.provenance.source_files


def test_resume_finishes_with_the_same_result(run_opts, monkeypatch, tmp_path):
    job = smoke("ours", total_steps=600)
    whole = load_record(run_one(job, dataclasses.replace(run_opts, checkpoint_every=150)))
    interrupted = interrupt(job, dataclasses.replace(run_opts, checkpoint_every=150), tmp_path, monkeypatch)
    resumed = load_record(run_one(job, dataclasses.replace(interrupted, resume=True)))
    values = lambda rec: {k: [(s, v) for s, _, v in pts] for k, pts in rec.curves.items()}  # noqa: E731
    assert values(resumed) == values(whole)
    assert resumed.metrics == whole.metrics


def test_full_tier_dry_run(capsys):
    assert cli.main(["reproduce", "dqn", "--tier", "full", "--dry-run", "--arms", "ours_breakout"]) == 0
    out = capsys.readouterr().out
    assert "built DQN" in out and "dry run of dqn/full: ready" in out


def test_save_load_round_trip(tmp_path):
    cfg = dqn.Config(env_id="CartPole-v1", hidden=8)
    a, b = dqn.build(cfg), dqn.build(cfg)
    a.save(tmp_path / "w.safetensors")
    b.load(tmp_path / "w.safetensors")
    obs = np.array([0.1, -0.2, 0.03, 0.4], dtype=np.float32)
    assert a.act(obs) == b.act(obs) and a.num_parameters() == 4 * 8 + 8 + 8 * 8 + 8 + 8 * 2 + 2
