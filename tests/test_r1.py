"""DeepSeek-R1's GRPO (reproductions/r1/grpo.py), the arithmetic task and its rule-based rewards
(evals/tasks/arithmetic.py) and the arithmetic_pass evaluator.

The objective is checked against independent references: eq. (1) written as a per-output,
per-token loop over Python floats; its gradient against the closed form at rho = 1; the k3
estimator of eq. (2) against torch's exact KL (its expectation under pi is KL(pi || pi_ref));
the advantages of eq. (3) against `statistics`; the sampler against the GPT's own greedy
`generate`."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import pytest
import torch

from evals.contract import QuietRun, Reasoner
from evals.evaluators import derived_metrics
from evals.evaluators.arithmetic_pass import ArithmeticPassOptions, arithmetic_pass
from evals.tasks import arithmetic as A
from reproductions.r1 import grpo


# -- eq. (3): group-relative advantages -----------------------------------------------------------
def test_group_advantages_against_a_loop():
    rewards = torch.tensor([[1.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 1.0, 1.0]])
    got = grpo.group_advantages(rewards)
    for g, row in enumerate(rewards.tolist()):
        mu, sd = statistics.mean(row), statistics.stdev(row)
        for i, r in enumerate(row):
            assert got[g, i].item() == pytest.approx((r - mu) / (sd + 1e-4), abs=1e-6)
    assert torch.all(got[1] == 0)  # a group that all agree teaches nothing


# -- eq. (2): the k3 estimator -------------------------------------------------------------------
def test_k3_is_the_papers_formula_and_non_negative():
    logp, ref = torch.tensor([-0.1, -2.0, -1.0, -0.5]), torch.tensor([-0.3, -1.0, -1.0, -4.0])
    expected = [math.exp(r) / math.exp(l) - math.log(math.exp(r) / math.exp(l)) - 1 for l, r in zip(logp.tolist(), ref.tolist())]
    assert grpo.k3_kl(logp, ref).tolist() == pytest.approx(expected, rel=1e-6)
    assert (grpo.k3_kl(torch.randn(1000), torch.randn(1000)) >= 0).all()
    assert grpo.k3_kl(logp, logp).abs().max() == 0


def test_k3_is_unbiased_for_kl_under_the_policy():
    g = torch.Generator().manual_seed(0)
    pi = torch.softmax(torch.randn(7, generator=g).double(), 0)
    ref = torch.softmax(torch.randn(7, generator=g).double(), 0)
    expectation = (pi * grpo.k3_kl(pi.log(), ref.log())).sum()
    exact = torch.distributions.kl_divergence(torch.distributions.Categorical(probs=pi),
                                              torch.distributions.Categorical(probs=ref))
    assert expectation.item() == pytest.approx(exact.item(), rel=1e-10)


# -- eq. (1): the GRPO objective -------------------------------------------------------------------
def naive_objective(logp, old, ref, adv, mask, eps, beta) -> float:
    """J of eq. (1), one output and one token at a time, in Python floats."""
    outputs = []
    for i in range(len(logp)):
        tokens = [t for t in range(len(logp[i])) if mask[i][t]]
        total = 0.0
        for t in tokens:
            rho = math.exp(logp[i][t] - old[i][t])
            clipped = min(max(rho, 1 - eps), 1 + eps)
            kl = math.exp(ref[i][t]) / math.exp(logp[i][t]) - (ref[i][t] - logp[i][t]) - 1
            total += min(rho * adv[i], clipped * adv[i]) - beta * kl
        outputs.append(total / len(tokens))
    return sum(outputs) / len(outputs)


def _batch(seed=0, n=6, t=9):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(n, t, generator=g) * 3
    old = logp + 0.4 * torch.randn(n, t, generator=g)           # ratios far from 1: both clips active
    ref = logp + 0.5 * torch.randn(n, t, generator=g)
    adv = torch.randn(n, generator=g)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("beta", [0.0, 0.04, 1.0])
def test_grpo_loss_is_minus_the_objective_of_a_loop(beta):
    logp, old, ref, adv, mask = _batch()
    loss, stats = grpo.grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=beta)
    want = naive_objective(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), 0.2, beta)
    assert loss.item() == pytest.approx(-want, rel=1e-5, abs=1e-6)
    assert 0 < stats["clip_frac"] < 1


def test_gradient_at_the_old_policy_is_the_closed_form():
    """At rho = 1 (mu = 1), d(-J)/d logp_it = -(A_i - beta (1 - pi_ref/pi)) / (|o_i| N)."""
    logp, _, ref, adv, mask = _batch(seed=1)
    beta, n = 0.1, logp.size(0)
    x = logp.clone().requires_grad_(True)
    loss, _ = grpo.grpo_loss(x, x.detach(), ref, adv, mask, clip_eps=0.2, beta=beta)
    loss.backward()
    lengths = mask.sum(1, keepdim=True).float()
    closed = -(adv[:, None] - beta * (1 - torch.exp(ref - logp))) * mask / (lengths * n)
    assert torch.allclose(x.grad, closed, atol=1e-6)


def test_the_clip_stops_the_gradient_past_the_trust_region():
    logp, old = torch.tensor([[0.0]]), torch.tensor([[-1.0]])     # rho = e > 1 + eps
    for adv, zero in ((1.0, True), (-1.0, False)):                 # A > 0: clipped; A < 0: the min keeps rho A
        x = logp.clone().requires_grad_(True)
        grpo.grpo_loss(x, old, x.detach(), torch.tensor([adv]), torch.ones(1, 1, dtype=torch.bool), 0.2, 0.0)[0].backward()
        assert (x.grad.abs().item() == 0) is zero


# -- the task and its rule-based rewards ---------------------------------------------------------
def test_rewards_on_hand_cases():
    p = A.Problem((12, 5, 33))
    assert p.prompt == "12+5+33=" and p.answer == 50
    cases = {  # text: (format, accuracy)
        "<think>12+5=17;17+33=50</think><answer>50</answer>": (1, 1),
        "<think></think><answer>50</answer>": (1, 1),
        "<think>12+5+33=51</think><answer>51</answer>": (1, 0),
        "<answer>50</answer>": (0, 1),                                   # right answer, no thinking tags
        "<think>12+5=17</think><answer>50</answer>;": (0, 1),            # text after the answer
        "<think>12+5=17</think><answer>49</answer><answer>50</answer>": (0, 0),  # the first answer counts
        "<think>12+5=17;17+33=50</think>50": (0, 0),
        "<think>12+5=17;17+33=50": (0, 0),
        "": (0, 0),
    }
    for text, (fmt, acc) in cases.items():
        assert (A.format_reward(text), A.accuracy_reward(p, text)) == (fmt, acc), text
    assert A.thinking_length("<think>12+5=17</think><answer>17</answer>") == 7
    assert A.thinking_length("<think>12+5") == 4 and A.thinking_length("50") == 0


def test_problems_and_worked_traces():
    g = torch.Generator().manual_seed(3)
    problems = A.sample_problems(300, g, min_operands=2, max_operands=4, max_operand=99)
    assert {len(p.operands) for p in problems} == {2, 3, 4}
    assert all(0 <= x <= 99 for p in problems for x in p.operands)
    again = A.sample_problems(300, torch.Generator().manual_seed(3), 2, 4, 99)
    assert again == problems
    lengths = set()
    for p in problems:
        text = A.worked_completion(p, max_group=3, generator=g)
        assert A.format_ok(text) and A.accuracy_reward(p, text) == 1
        steps = text[len(A.THINK):text.index(A.END_THINK)].split(";")
        total = p.operands[0]
        for step in steps:  # every step is a true equation that continues the running total
            lhs, rhs = step.split("=")
            terms = list(map(int, lhs.split("+")))
            assert terms[0] == total and sum(terms) == int(rhs)
            total = int(rhs)
        assert total == p.answer
        lengths.add(len(steps))
        ids = A.encode(p.prompt + text + A.EOS)
        assert A.decode(ids) == p.prompt + text + A.EOS and ids[-1] == A.EOS_ID
    assert lengths == {1, 2, 3}  # fine and coarse traces both occur
    assert A.worked_thinking((1, 2, 3, 4), [1, 1, 1]) == "1+2=3;3+3=6;6+4=10"
    assert A.worked_thinking((1, 2, 3, 4), [3]) == "1+2+3+4=10"
    assert len(A.padded_prompt(A.Problem((1, 2, 3)), A.prompt_width(5, 99))) == 15
    with pytest.raises(ValueError):
        A.encode("1-2")


# -- sampling and scoring with the GPT -------------------------------------------------------------
def _tiny_cfg(**kw):
    base = dict(max_operands=3, n_layer=1, n_head=2, n_embd=16, sft_steps=3, sft_batch=4, warmup_steps=1, rl_steps=2,
                prompts_per_step=2, group_size=2, log_every=1, eval_every=2, eval_problems=4)
    return grpo.Config(**{**base, **kw})


def test_greedy_sampling_is_the_gpts_own_generate_until_the_end_token():
    torch.manual_seed(0)
    agent = grpo.build(_tiny_cfg())
    prompts = torch.tensor([A.padded_prompt(A.Problem((1, 22, 3)), 9), A.padded_prompt(A.Problem((40, 5)), 9)])
    ours = grpo.sample(agent.policy, prompts, 20, 0.0, 1.0, torch.Generator())
    theirs = agent.policy.generate(prompts, 20)[:, 9:]
    mask = grpo.completion_mask(ours)
    assert torch.equal(ours[mask], theirs[:, :ours.size(1)][mask])


def test_completion_mask_and_token_logprobs():
    e, p = A.EOS_ID, A.PAD_ID
    comps = torch.tensor([[7, 8, e, p], [7, 7, 7, 7], [e, p, p, p]])
    assert grpo.completion_mask(comps).tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    agent = grpo.build(_tiny_cfg())
    seqs = torch.randint(0, len(A.VOCAB), (3, 12))
    lp = grpo.token_logprobs(agent.policy, seqs, 5)
    full = torch.log_softmax(agent.policy(seqs)[0], -1)
    for i in range(3):
        for t in range(5, 12):
            assert lp[i, t - 5].item() == pytest.approx(full[i, t - 1, seqs[i, t]].item(), abs=1e-5)


def test_nucleus_sampling_keeps_the_smallest_set_reaching_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    draws = grpo.pick(logits, 1.0, 0.7, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=4).float() / 4000
    assert counts[2] == 0 and counts[3] == 0                  # 0.5 + 0.3 reaches 0.7: two tokens kept
    assert counts[0].item() == pytest.approx(0.5 / 0.8, abs=0.03)
    assert torch.equal(grpo.pick(logits[:2], 0.0, 1.0, torch.Generator()), torch.tensor([0, 0]))


# -- the evaluator ------------------------------------------------------------------------------------
class _Fake:
    """Answers right when the first operand is even, thinking `think` tokens."""

    def __init__(self, think: int, start=None):
        self.think, self.start = think, start

    def complete(self, prompts, temperature, top_p, generator, max_new_tokens):
        out = []
        for q in prompts:
            ops = list(map(int, q[:-1].split("+")))
            ans = sum(ops) if ops[0] % 2 == 0 else sum(ops) + 1
            out.append(A.completion("1" * self.think, ans))
        return out

    def starting_point(self):
        return self.start


def test_arithmetic_pass_scores_the_policy_and_its_start():
    cfg = SimpleNamespace(min_operands=2, max_operands=3, max_operand=9)
    agent = _Fake(6, start=_Fake(3))
    assert isinstance(agent, Reasoner)
    result = arithmetic_pass(agent, cfg, ArithmeticPassOptions(n=40, samples=2))
    problems = A.sample_problems(40, torch.Generator().manual_seed(20250122), 2, 3, 9)
    even = sum(p.operands[0] % 2 == 0 for p in problems) / 40
    m = result.metrics
    assert m["pass1"] == pytest.approx(even) and m["pass1_greedy"] == pytest.approx(even)
    assert m["start_pass1"] == pytest.approx(even) and m["pass1_gain"] == 0
    assert m["format_rate"] == 1 and m["think_length"] == 6 and m["think_length_ratio"] == 2
    assert derived_metrics(result) == {"think_length_ratio": 2.0}
    alone = arithmetic_pass(_Fake(4), cfg, ArithmeticPassOptions(n=5, samples=1))
    assert "start_pass1" not in alone.metrics and derived_metrics(alone) == {}
    skipped = arithmetic_pass(agent, SimpleNamespace(), ArithmeticPassOptions(n=5))
    assert skipped.metrics == {} and "not_scored" in skipped.protocol


# -- end to end ---------------------------------------------------------------------------------------
def _first_token_reward(problems, texts, cfg):
    """A stand-in rule: reward 1 for a completion that opens with `<think>` (else 0)."""
    r = torch.tensor([float(t.startswith(A.THINK)) for t in texts])
    return r, r


def test_grpo_raises_the_probability_of_the_rewarded_output(monkeypatch):
    monkeypatch.setattr(grpo, "rewards", _first_token_reward)
    torch.manual_seed(0)
    cfg = _tiny_cfg(prompts_per_step=4, group_size=8, max_new_tokens=4, rl_lr=0.01, beta=0.04)
    agent = grpo.build(cfg)
    prompts = torch.tensor([A.padded_prompt(A.Problem((1, 2)), A.prompt_width(cfg.max_operands, cfg.max_operand))])

    def p_think():
        return torch.softmax(agent.policy(prompts)[0][0, -1], -1)[A.TOKEN_ID[A.THINK]].item()

    before, g = p_think(), torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(agent.policy.parameters(), lr=cfg.rl_lr)
    for _ in range(30):
        grpo.grpo_step(agent.policy, agent.reference, opt, cfg, g, "cpu")
    assert before < 0.2 and p_think() > 0.6


@pytest.mark.parametrize("method", ["grpo", "sft"])
def test_tiny_training_keeps_its_start_and_saves(method, tmp_path, monkeypatch):
    monkeypatch.setattr(grpo, "rewards", _first_token_reward)  # an untrained model earns no real reward
    logged = []

    class Run(QuietRun):
        def log(self, step, **values):
            logged.append((step, values))

    cfg = _tiny_cfg(method=method)
    agent = grpo.train(cfg, Run(seed=1))
    names = {k for _, v in logged for k in v}
    assert "sft_loss" in names and "heldout_greedy" in names
    assert ("reward" in names and "kl" in names) is (method == "grpo")
    assert max(s for s, _ in logged) == cfg.sft_steps + cfg.rl_steps
    # pi_ref is the cold-start checkpoint: the second phase moved the policy away from it
    moved = any(not torch.equal(a, b) for a, b in zip(agent.policy.parameters(), agent.reference.parameters()))
    assert moved
    agent.save(tmp_path / "a.safetensors")
    again = grpo.build(cfg).load(tmp_path / "a.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(agent.state_dict().values(), again.state_dict().values()))
    texts = again.complete(["1+2+3="], 0.0, 1.0, torch.Generator(), 8)
    assert texts == agent.complete(["1+2+3="], 0.0, 1.0, torch.Generator(), 8)


# -- the full tier's rules on MATH answers -----------------------------------------------------------
def test_math_rewards_on_hand_cases():
    from reproductions.r1 import full

    assert full.accuracy_reward("<think>x</think> <answer> \\boxed{\\dfrac{3}{4}} </answer>", "\\frac{3}{4}") == 1
    assert full.accuracy_reward("<answer>$42.$</answer>", "42") == 1
    assert full.accuracy_reward("<answer>0.50</answer>", "0.5") == 1
    assert full.accuracy_reward("<answer>1,000</answer>", "1000") == 1
    assert full.accuracy_reward("<answer>\\left(1, 2\\right)</answer>", "(1,2)") == 1
    assert full.accuracy_reward("<answer>41</answer>", "42") == 0
    assert full.accuracy_reward("the answer is 42", "42") == 0
    assert full.format_reward(" <think> a </think>\n<answer> 5 </answer>") == 1
    assert full.format_reward("<answer> 5 </answer>") == 0
    assert full.format_reward("<think> a </think><answer> 5 </answer> more") == 0
