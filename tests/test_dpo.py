"""DPO (reproductions/dpo/dpo.py), the review language and its reward (evals/tasks/reviews.py), the
KL estimator and the frontier, and the reward_kl_frontier evaluator.

References: eq. (7) against TRL's own DPO loss (`DPOTrainer._compute_loss`, loss type 'sigmoid',
reverse KL, precomputed reference log-probabilities) fed the same per-token log-probabilities of
our GPT, and against the formula in Python floats; the KL estimator against the exact
sequence-level KL by enumeration of every sequence of a small autoregressive model, and against the
plain Monte Carlo estimate; the frontier area against hand-computed values; the PPO reward shaping
against a per-token loop."""

from __future__ import annotations

import itertools
import math
import types
from collections import defaultdict

import pytest
import torch

from evals.contract import PolicyFamily, QuietRun
from evals.evaluators import derived_metrics
from evals.evaluators.reward_kl_frontier import RewardKLFrontierOptions, reward_kl_frontier
from evals.tasks import reviews as R
from reproductions.dpo import dpo as D


# -- the review language and its reward ------------------------------------------------------------
def test_reward_reads_adverbs_negation_and_stops_at_eos():
    assert R.score(R.encode("<bos> the film was very great . the plot is not dull .")) == 2.0 + 1.0
    assert R.score(R.encode("the cast seemed somewhat awful . <eos> the film was very great .")) == -0.5
    assert R.score(R.encode("the film was rather long .")) == 0.0
    assert R.reward(R.encode("the film was quite bad .")) == pytest.approx(1 / (1 + math.exp(1.5)))


def test_reviews_are_well_formed_and_sentiment_varies():
    g = torch.Generator().manual_seed(0)
    rows = R.reviews(300, g)
    for r in rows:
        assert r[0] == R.BOS_ID and r[-1] == R.EOS_ID and len(r) <= R.PROMPT_LEN + R.MAX_COMPLETION
        assert R.VOCAB[r[R.PROMPT_LEN - 1]] == R.STOP          # the prompt is <bos> and one whole sentence
    rewards = [R.reward(r) for r in rows]
    assert min(rewards) < 0.1 and max(rewards) > 0.9 and 0.35 < sum(rewards) / len(rewards) < 0.65
    assert R.prompts(5, torch.Generator().manual_seed(1)).shape == (5, R.PROMPT_LEN)


# -- eq. (7): the DPO loss ----------------------------------------------------------------------------
def _trl_dpo_loss(per_token: torch.Tensor, completion_mask: torch.Tensor, input_ids: torch.Tensor,
                  ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """TRL's DPOTrainer._compute_loss on a batch [chosen; rejected] whose per-token log-probabilities
    are given (what its fused LM head would return), the reference's precomputed."""
    pytest.importorskip("trl", minversion="1.16")
    from trl.trainer import dpo_trainer
    n = per_token.size(0)

    def model(**kwargs):
        return types.SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                                     mean_logits=torch.zeros_like(per_token),
                                     is_top1=torch.zeros_like(per_token, dtype=torch.bool))

    model.training = True
    accelerator = types.SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x)
    trainer = types.SimpleNamespace(
        model=model, accelerator=accelerator, aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=["sigmoid"], loss_weights=[1.0], beta=beta, use_weighting=False,
        label_smoothing=0.0, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "completion_mask": completion_mask,
              "ref_chosen_logps": ref_logps[:n // 2], "ref_rejected_logps": ref_logps[n // 2:]}
    return dpo_trainer.DPOTrainer._compute_loss(trainer, model, inputs, False)


@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0])
def test_dpo_loss_matches_trl_on_our_gpts_log_probs(beta):
    torch.manual_seed(0)
    cfg = D.Config(n_layer=1, n_head=2, n_embd=16)
    policy, reference = D.GPT(D.gpt_config(cfg)), D.GPT(D.gpt_config(cfg))
    g = torch.Generator().manual_seed(3)
    prompts = R.prompts(4, g)
    chosen, rejected = D.sample(reference, prompts, g), D.sample(reference, prompts, g)
    seqs = torch.cat([chosen, rejected])
    with torch.no_grad():
        per_token = D.sequence_logprobs(policy, seqs, per_token=True)        # (8, T), zero after <eos>
        ref = D.sequence_logprobs(reference, seqs)
        ours = D.dpo_loss(per_token[:4].sum(1), per_token[4:].sum(1), ref[:4], ref[4:], beta)
    # TRL's layout: per-token log-probs aligned with input_ids[:, 1:], completion_mask over input_ids
    mask = torch.zeros_like(seqs)
    mask[:, D.P:] = R.completion_mask(seqs[:, D.P:]).long()
    shifted = torch.zeros(seqs.size(0), seqs.size(1) - 1)
    shifted[:, D.P - 1:] = per_token
    theirs = _trl_dpo_loss(shifted, mask, seqs, ref, beta)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert ours.item() != pytest.approx(math.log(2))                      # the two models differ


def test_dpo_loss_against_the_formula_and_its_gradient_direction():
    lc, lr = torch.tensor([-3.0, -5.0], requires_grad=True), torch.tensor([-4.0, -2.0], requires_grad=True)
    rc, rr, beta = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -2.5]), 0.5
    loss = D.dpo_loss(lc, lr, rc, rr, beta)
    expected = sum(-math.log(1 / (1 + math.exp(-beta * ((a - c) - (b - d)))))
                   for a, b, c, d in zip([-3.0, -5.0], [-4.0, -2.0], [-3.5, -4.0], [-3.0, -2.5])) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert (lc.grad < 0).all() and (lr.grad > 0).all()     # raise the preferred, lower the dispreferred
    # eq. (5)'s implicit reward; at pi = pi_ref the loss is log 2 whatever the pairs
    assert D.dpo_loss(rc, rr, rc, rr, 3.0).item() == pytest.approx(math.log(2))


def test_reward_model_loss_is_bradley_terry():
    a, b = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.0, 0.5, 2.0])
    expected = sum(math.log(1 + math.exp(-(x - y))) for x, y in zip(a.tolist(), b.tolist())) / 3
    assert D.reward_model_loss(a, b).item() == pytest.approx(expected, rel=1e-6)


def test_kl_shaped_rewards_against_a_loop():
    torch.manual_seed(1)
    logp, ref = -torch.rand(3, 5), -torch.rand(3, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    score, c = torch.tensor([0.5, -1.0, 2.0]), 0.2
    got = D.kl_shaped_rewards(logp, ref, score, mask, c)
    for i in range(3):
        n = int(mask[i].sum())
        for t in range(5):
            want = 0.0 if t >= n else -c * (logp[i, t] - ref[i, t]).item() + (score[i].item() if t == n - 1 else 0.0)
            assert got[i, t].item() == pytest.approx(want, abs=1e-6)


# -- the KL estimator ---------------------------------------------------------------------------------
def _tables(seed: int):
    """A two-step autoregressive model over 3 tokens: p(y1), p(y2 | y1), as log-probability tables."""
    g = torch.Generator().manual_seed(seed)
    first = torch.log_softmax(torch.randn(3, generator=g).double(), 0)
    second = torch.log_softmax(torch.randn(3, 3, generator=g).double(), 1)
    return first, second


def test_sequence_kl_is_the_exact_sequence_kl_in_expectation():
    (p1, p2), (q1, q2) = _tables(0), _tables(1)
    exact, expectation = 0.0, 0.0
    for y1, y2 in itertools.product(range(3), repeat=2):
        lp, lq = p1[y1] + p2[y1, y2], q1[y1] + q2[y1, y2]
        exact += lp.exp() * (lp - lq)
        logp = torch.stack([p1, p2[y1]])[None]                 # (1, T=2, vocab): the positions y visits
        logq = torch.stack([q1, q2[y1]])[None]
        estimate = R.sequence_kl(logp, logq, torch.ones(1, 2, dtype=torch.bool))
        expectation += lp.exp() * estimate[0]
    assert expectation.item() == pytest.approx(exact.item(), rel=1e-10)
    assert exact.item() > 0.05
    # a masked position (after <eos>) adds nothing
    logp, logq = torch.stack([p1, p2[0]])[None], torch.stack([q1, q2[0]])[None]
    one = R.sequence_kl(logp, logq, torch.tensor([[True, False]]))
    assert one.item() == pytest.approx((p1.exp() * (p1 - q1)).sum().item(), rel=1e-10)


def test_sequence_kl_agrees_with_the_plain_estimate_and_has_less_variance():
    (p1, p2), (q1, q2) = _tables(2), _tables(3)
    g = torch.Generator().manual_seed(0)
    y1 = torch.multinomial(p1.exp(), 20000, replacement=True, generator=g)
    y2 = torch.multinomial(p2[y1].exp(), 1, generator=g).squeeze(1)
    plain = (p1[y1] + p2[y1, y2]) - (q1[y1] + q2[y1, y2])
    ours = R.sequence_kl(torch.stack([p1.expand(20000, 3), p2[y1]], 1), torch.stack([q1.expand(20000, 3), q2[y1]], 1),
                         torch.ones(20000, 2, dtype=torch.bool))
    assert ours.mean().item() == pytest.approx(plain.mean().item(), abs=4 * plain.std().item() / math.sqrt(20000))
    assert ours.var().item() < plain.var().item()


# -- the frontier ---------------------------------------------------------------------------------------
def test_frontier_area_by_hand():
    pts = [(1.0, 0.7), (2.0, 0.9), (3.0, 0.8), (9.0, 1.0)]      # the last lies beyond kl_max
    # budgets [0,1): 0.5 -> 0; [1,2): 0.7 -> 0.4; [2,4): 0.9 -> 0.8 (0.8 at KL 3 does not lower it)
    assert R.frontier_area(pts, 0.5, 4.0) == pytest.approx((0 + 0.4 + 2 * 0.8) / 4)
    assert R.frontier_area([(0.5, 0.3)], 0.5, 1.0) == 0.0       # below the reference: nothing
    assert R.frontier_area([(0.0, 1.0)], 0.5, 2.0) == pytest.approx(1.0)
    assert R.frontier([(1.0, 0.7)], [0.5, 1.0]) == [-math.inf, 0.7]


def test_share_ahead_and_dominance():
    a, b = [(1.0, 0.8)], [(0.5, 0.6), (2.0, 0.9)]
    # a ahead on [0, 0.5) (tie at the reference) and [1, 2); b ahead on [0.5, 1) and [2, 4)
    assert R.share_ahead(a, b, 0.5, 4.0) == pytest.approx((0.5 + 1.0) / 4)
    assert R.share_ahead(b, b, 0.5, 4.0) == 1.0


# -- the pipeline and the evaluator ---------------------------------------------------------------------
TINY = dict(n_layer=1, n_head=2, n_embd=16, sft_steps=30, pair_prompts=48, dpo_betas=[0.1, 1.0], dpo_epochs=1,
            rm_epochs=1, ppo_kl_coefs=[0.1], ppo_iterations=2, ppo_batch=8, ppo_minibatch=4, ppo_epochs=1,
            checkpoints=2, log_every=1, plot_prompts=8)


def test_train_fills_every_point_and_the_evaluator_derives_its_metrics(tmp_path):
    cfg = D.Config(**TINY)
    agent = D.train(cfg, QuietRun(seed=1, folder=tmp_path))
    assert (tmp_path / "reward_kl_frontier.png").is_file()
    assert isinstance(agent, PolicyFamily)
    names = agent.frontier_points()
    assert len(names) == 2 * 2 + 1 * 2 and agent.point_method(names[0]) == "dpo"
    assert not torch.equal(agent.points[names[0]].wte.weight, agent.reference.wte.weight)
    compute = agent.training_compute()
    assert compute["dpo_flops"] > 0 and compute["ppo_flops"] > 0
    agent.save(tmp_path / "a.safetensors")
    loaded = D.build(cfg).load(tmp_path / "a.safetensors")
    assert torch.equal(loaded.points[names[-1]].wte.weight, agent.points[names[-1]].wte.weight)
    assert loaded.training_compute() == compute
    result = reward_kl_frontier(loaded, cfg, RewardKLFrontierOptions(n=16))
    assert set(result.metrics) >= {"frontier_area_dpo", "frontier_area_ppo", "area_gap", "compute_ratio"}
    assert derived_metrics(result) == pytest.approx(result.metrics)
    assert result.metrics["compute_ratio"] == pytest.approx(compute["dpo_flops"] / compute["ppo_flops"])
    assert len(result.samples["kl"]) == 16 * (1 + len(names)) and min(result.samples["kl"]) > -1e-5
    ref = [r for p, r in zip(result.samples["point"], result.samples["reward"]) if p == -1]
    assert result.metrics["reference_reward"] == pytest.approx(sum(ref) / len(ref))


def test_the_evaluators_kl_range_is_the_one_both_methods_cover():
    from evals.evaluators.reward_kl_frontier import _metrics
    points = {-1: (0.0, 0.5), 0: (1.0, 0.7), 1: (6.0, 0.9), 2: (0.5, 0.6), 3: (2.0, 0.8)}
    methods = ["dpo", "dpo", "ppo", "ppo"]
    compute = {"dpo_flops": 1.0, "ppo_flops": 4.0, "dpo_cpu_seconds": 1.0, "ppo_cpu_seconds": 2.0}
    m = _metrics(points, ["a", "b", "c", "d"], methods, ["dpo", "ppo"], compute, None)
    assert m["kl_max"] == 2.0                           # PPO's largest KL, not DPO's 6
    assert m["best_reward_dpo"] == 0.7                  # DPO's point at KL 6 lies outside the range
    # DPO: 0.4 on [1, 2); PPO: 0.2 on [0.5, 2) (its point at kl_max itself covers no budget)
    assert m["frontier_area_dpo"] == pytest.approx(0.4 / 2) and m["frontier_area_ppo"] == pytest.approx(0.3 / 2)
    assert m["area_gap"] == pytest.approx(0.05) and m["ahead_share"] == pytest.approx(0.75)
    assert m["dominates"] == 0.0 and m["compute_ratio"] == 0.25 and m["cpu_time_ratio"] == 0.5
    assert _metrics(points, ["a", "b", "c", "d"], methods, ["dpo", "ppo"], compute, 6.0)["kl_max"] == 6.0


def test_the_evaluators_reference_point_has_zero_kl():
    cfg = D.Config(**TINY)
    agent = D.build(cfg)
    for name in agent.frontier_points():
        agent.points[name].load_state_dict(agent.reference.state_dict())
    agent.compute.fill_(1.0)
    result = reward_kl_frontier(agent, cfg, RewardKLFrontierOptions(n=8))
    assert max(result.samples["kl"]) == pytest.approx(0.0, abs=1e-6)
