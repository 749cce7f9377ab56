"""s1's budget forcing (reproductions/s1/forcing.py), its s1K-style curation (reproductions/s1/s1.py)
and the budget_forcing evaluator.

Budget forcing is checked on a hand-built model whose outputs are known (it thinks `1` for as
many tokens as the prompt's first operand, then wants to end; its answer is how many thinking
tokens it saw), and on a random GPT against a per-sequence loop without a cache written the
paper's way (generate until the end-of-thinking delimiter or the cap; at the cap append the
delimiter and "Final Answer:"; at a suppressed end draw again or append "Wait"). The evaluator's
Scaling metric is checked against s1's eq. (2) worked by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from evals.contract import BudgetForcedReasoner, QuietRun, Reasoner
from evals.evaluators import derived_metrics
from evals.evaluators.budget_forcing import BudgetForcingOptions, budget_forcing, scaling
from evals.tasks import arithmetic as A
from reproductions.r1 import grpo as r1
from reproductions.s1 import forcing, s1
from reproductions.transformer.gpt import GPT, GPTConfig

T = A.TOKEN_ID
V = len(A.VOCAB)


class Scripted:
    """A hand-built "model" with known outputs: inside the thinking it emits `1` until it has
    thought as many tokens as the prompt's first operand, then prefers `</think>` (logit 10) over
    `2` (logit `second`) and `3` (0); after `</think>`: `<answer>`, the number of thinking tokens,
    `</answer>`, `<eos>`. It reads the whole sequence it was fed (kept in `caches`)."""

    def __init__(self, second: float = 5.0):
        self.second = second
        self.blocks = [None]

    def __call__(self, feed, caches):
        cache = caches[0]
        cache["seq"] = feed if "seq" not in cache else torch.cat([cache["seq"], feed], dim=1)
        logits = torch.zeros(feed.size(0), 1, V)
        for i, row in enumerate(cache["seq"].tolist()):
            logits[i, 0] = self.row_logits(row)
        return (logits,)

    def row_logits(self, row: list[int]) -> torch.Tensor:
        out = torch.full((V,), -20.0)
        text = A.decode([t for t in row if t != T[A.PAD]])
        prompt, _, completion = text.partition("=")
        natural = int(prompt.split("+")[0])
        if A.THINK not in completion:
            out[T[A.THINK]] = 10
        elif A.END_THINK not in completion:
            if A.thinking_length(completion) < natural:
                out[T["1"]] = 10
            else:
                out[T[A.END_THINK]], out[T["2"]], out[T["3"]] = 10, self.second, 0
        else:
            after = completion.split(A.END_THINK, 1)[1]
            said = A.thinking_length(completion)
            script = A.encode(f"{A.ANSWER}{said}{A.END_ANSWER}") + [A.EOS_ID]
            done = len(A.encode(after))
            out[script[done] if done < len(script) else T[A.PAD]] = 10
        return out


def prompts_of(*first: int, width: int = 12) -> torch.Tensor:
    return torch.tensor([A.padded_prompt(A.Problem((f, 0)), width) for f in first])


def run_toy(first, **kw) -> list[str]:
    defaults = dict(max_new_tokens=40, temperature=0.0, top_p=1.0, generator=torch.Generator().manual_seed(0))
    return r1.texts_of(forcing.forced_sample(Scripted(), prompts_of(*first), **(defaults | kw)))


# -- budget forcing on a model with known outputs --------------------------------------------------
def test_no_forcing_is_the_models_own_output():
    assert run_toy([3, 0]) == ["<think>111</think><answer>3</answer>", "<think></think><answer>0</answer>"]


def test_the_cap_ends_the_thinking_and_forces_the_answer():
    assert run_toy([5, 3, 2], max_thinking=2) == ["<think>11</think><answer>2</answer>"] * 2 + \
        ["<think>11</think><answer>2</answer>"]
    assert run_toy([5], max_thinking=0) == ["<think></think><answer>0</answer>"]
    assert run_toy([3], max_thinking=9) == ["<think>111</think><answer>3</answer>"]   # a cap not reached changes nothing


def test_suppression_draws_the_next_best_token_instead_of_the_end():
    assert run_toy([3], extensions=1) == ["<think>1112</think><answer>4</answer>"]
    assert run_toy([3], extensions=2) == ["<think>11122</think><answer>5</answer>"]
    assert run_toy([3], extensions=2, max_thinking=4) == ["<think>1112</think><answer>4</answer>"]  # the cap wins


def test_wait_appends_the_continuation_in_place_of_the_end():
    wait = A.encode("+;")
    assert run_toy([3], extensions=1, continuation=wait) == ["<think>111+;</think><answer>5</answer>"]
    assert run_toy([2], extensions=2, continuation=wait) == ["<think>11+;+;</think><answer>6</answer>"]
    assert run_toy([3], extensions=1, continuation=wait, max_thinking=4) == ["<think>111+</think><answer>4</answer>"]


def test_suppressed_draws_follow_the_model_without_the_end():
    """At temperature 1 the end of thinking is never emitted while a suppression is left, and the
    token drawn in its place follows softmax over the rest: P(2) = e / (e + 1) for logits 1, 0."""
    model, n = Scripted(second=1.0), 4000
    out = forcing.forced_sample(model, prompts_of(*[1] * n), 12, 1.0, 1.0, torch.Generator().manual_seed(3),
                                extensions=1)
    texts = r1.texts_of(out)
    assert all(t.startswith("<think>1") and t[8] in "23" for t in texts)
    share = sum(t[8] == "2" for t in texts) / n
    assert share == pytest.approx(2.718281828 / 3.718281828, abs=0.025)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="max_thinking"):
        run_toy([1], max_thinking=-1)
    with pytest.raises(ValueError, match="delimiter"):
        run_toy([1], extensions=1, continuation=[T[A.END_THINK]])


# -- against a per-sequence loop written the paper's way, on a random GPT --------------------------
class Biased(torch.nn.Module):
    """A random GPT whose end-of-thinking and end-of-sequence logits are raised, so that the
    delimiter is often the greedy choice and suppression acts."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.gpt = GPT(GPTConfig(vocab_size=V, block_size=60, n_layer=1, n_head=2, n_embd=16))
        with torch.no_grad():
            for p in self.gpt.parameters():
                p.normal_(0, 0.6)
        self.bias = torch.zeros(V)
        self.bias[T[A.END_THINK]], self.bias[T[A.EOS]] = 1.5, 0.5
        self.blocks = self.gpt.blocks

    def forward(self, idx, caches=None):
        return (self.gpt(idx, caches=caches)[0] + self.bias,)


def paper_loop(model, prompt: list[int], cap, extensions: int, continuation: list[int], max_new: int) -> list[int]:
    """One sequence, no cache, greedy: think until the delimiter or the cap (then append the
    delimiter and the answer tag), suppressing the first `extensions` delimiters; then answer."""
    def best(seq, ban_end=False):
        logits = model(torch.tensor([seq]))[0][0, -1]
        if ban_end:
            logits = logits.clone()
            logits[T[A.END_THINK]] = float("-inf")
        return int(logits.argmax())

    seq, thinking, left = prompt + [T[A.THINK]], 0, extensions
    while len(seq) - len(prompt) < max_new:
        if cap is not None and thinking >= cap:
            seq += [T[A.END_THINK], T[A.ANSWER]]
            break
        tok = best(seq)
        if tok == T[A.END_THINK] and left > 0:
            left -= 1
            if continuation:
                for c in continuation:
                    if cap is not None and thinking >= cap:
                        break
                    seq.append(c)
                    thinking += 1
                continue
            tok = best(seq, ban_end=True)
        seq.append(tok)
        if tok == T[A.END_THINK] or tok == A.EOS_ID:
            break
        thinking += 1
    while len(seq) - len(prompt) < max_new and seq[-1] != A.EOS_ID:
        seq.append(best(seq))
    out = seq[len(prompt):len(prompt) + max_new]
    return out[:out.index(A.EOS_ID) + 1] if A.EOS_ID in out else out


@pytest.mark.parametrize("cap,extensions,wait", [(None, 0, False), (3, 0, False), (0, 0, False), (None, 2, False),
                                                 (None, 2, True), (5, 3, True), (6, 1, False)])
def test_batched_cached_decoding_matches_the_papers_loop(cap, extensions, wait):
    model = Biased(seed=4).eval()
    g = torch.Generator().manual_seed(1)
    problems = A.sample_problems(12, g, 3, 4, 9)
    width = A.prompt_width(4, 9)
    prompts = torch.tensor([A.padded_prompt(p, width) for p in problems])
    cont = A.encode(";+") if wait else []
    got = forcing.forced_sample(model, prompts, 30, 0.0, 1.0, g, max_thinking=cap, extensions=extensions,
                                continuation=cont)
    suppressed = 0
    for i in range(len(problems)):
        want = paper_loop(model, prompts[i].tolist(), cap, extensions, cont, 30)
        row = got[i].tolist()
        assert row[:len(want)] == want, (i, A.decode(row), A.decode(want))
        plain = paper_loop(model, prompts[i].tolist(), cap, 0, [], 30)
        suppressed += want != plain
    if extensions:
        assert suppressed > 0   # the case exercised suppression


def test_without_forcing_it_is_r1s_sampler_after_the_opening_tag():
    model = Biased(seed=5).eval()
    problems = A.sample_problems(6, torch.Generator().manual_seed(2), 3, 4, 9)
    prompts = torch.tensor([A.padded_prompt(p, A.prompt_width(4, 9)) for p in problems])
    mine = forcing.forced_sample(model, prompts, 20, 0.0, 1.0, torch.Generator())
    opened = torch.cat([prompts, torch.full((6, 1), T[A.THINK])], dim=1)
    theirs = r1.sample(_Plain(model), opened, 19, 0.0, 1.0, torch.Generator())
    for a, b in zip(r1.texts_of(mine), r1.texts_of(theirs)):
        assert a == A.THINK + b


class _Plain:
    """R1's sampler calls model(feed, caches=...) and reads `blocks`: the biased GPT as it is."""

    def __init__(self, model):
        self.model, self.blocks = model, model.blocks

    def __call__(self, feed, caches):
        return self.model(feed, caches=caches)


def test_capped_sampling_never_exceeds_the_cap():
    model = Biased(seed=6).eval()
    model.bias[T[A.END_THINK]] = model.bias[T[A.EOS]] = -5.0   # a model that never wants to stop
    problems = A.sample_problems(40, torch.Generator().manual_seed(3), 3, 4, 9)
    prompts = torch.tensor([A.padded_prompt(p, A.prompt_width(4, 9)) for p in problems])
    for cap in (0, 1, 7):
        for wait in (False, True):
            texts = r1.texts_of(forcing.forced_sample(model, prompts, 30, 1.0, 1.0, torch.Generator().manual_seed(cap),
                                                      max_thinking=cap, extensions=2,
                                                      continuation=A.encode(";") if wait else ()))
            assert all(A.thinking_length(t) == cap for t in texts)
            assert all(t.startswith(A.THINK) and A.END_THINK + A.ANSWER in t for t in texts)


# -- s1K: quality, difficulty, diversity ----------------------------------------------------------
def test_quality_check_on_hand_cases():
    p = A.Problem((3, 4, 5))
    assert s1.trace_ok(p, "<think>3+4=7;7+5=12</think><answer>12</answer>")
    assert s1.trace_ok(p, "<think>3+4+5=12</think><answer>12</answer>")
    assert not s1.trace_ok(p, "<think>3+4=8;8+5=13</think><answer>13</answer>")   # a slip
    assert not s1.trace_ok(p, "<think>3+4=7;7+5=12</think><answer>13</answer>")   # wrong answer
    assert not s1.trace_ok(p, "<think>3+5=8;8+4=12</think><answer>12</answer>")   # operands out of order
    assert not s1.trace_ok(p, "<think>3+4=7</think><answer>12</answer>")          # an operand skipped
    assert not s1.trace_ok(p, "<think>3+4=7;7+5=12</think>")                       # no answer


def test_teacher_slips_at_the_given_rate_and_are_caught():
    cfg = s1.Config(pool_size=2000, pool_error_rate=0.3)
    pool = s1.make_pool(cfg, torch.Generator().manual_seed(0))
    bad = [e for e in pool if not s1.trace_ok(e.problem, e.completion)]
    assert len(bad) / len(pool) == pytest.approx(0.3, abs=0.04)
    assert all(A.answer_of(e.completion) != e.problem.answer for e in bad)   # a slip carries to the answer
    clean = s1.make_pool(s1.Config(pool_size=300, pool_error_rate=0.0), torch.Generator().manual_seed(0))
    assert all(s1.trace_ok(e.problem, e.completion) for e in clean)


def test_curation_is_diverse_and_favours_long_traces_random_is_not():
    cfg = s1.Config(pool_size=6000)
    pool = s1.make_pool(cfg, torch.Generator().manual_seed(1))
    cur = s1.curate(pool, 400, torch.Generator().manual_seed(2))
    rnd = s1.random_set(pool, 400, torch.Generator().manual_seed(2))
    for chosen in (cur, rnd):
        assert len(chosen) == 400 and len({id(e) for e in chosen}) == 400
        assert all(s1.trace_ok(e.problem, e.completion) for e in chosen)   # both pass the quality filter
    share = {d: sum(e.domain == d for e in cur) / 400 for d in range(3, 7)}
    assert all(abs(v - 0.25) < 0.07 for v in share.values())              # domains drawn uniformly
    assert sum(e.domain == 3 for e in rnd) / 400 > 0.4                      # the pool's skew (P(3) = 8/15)
    for d in range(3, 7):                                                    # within a domain: longer traces
        mine = [A.thinking_length(e.completion) for e in cur if e.domain == d]
        theirs = [A.thinking_length(e.completion) for e in pool if e.domain == d and s1.trace_ok(e.problem, e.completion)]
        assert sum(mine) / len(mine) > sum(theirs) / len(theirs)


def test_curation_takes_everything_when_the_pool_is_small():
    pool = s1.make_pool(s1.Config(pool_size=30, pool_error_rate=0.0), torch.Generator().manual_seed(0))
    assert len(s1.curate(pool, 100, torch.Generator().manual_seed(0))) == 30


# -- the evaluator --------------------------------------------------------------------------------
def test_scaling_is_eq_2_by_hand():
    # points (thinking, accuracy): slopes (0.5-0.2)/10 = 0.03, (0.6-0.2)/30 = 0.01333, (0.6-0.5)/20 = 0.005
    assert scaling([(0, 0.2), (10, 0.5), (30, 0.6)]) == pytest.approx((0.03 + 0.4 / 30 + 0.005) / 3)
    assert scaling([(5, 0.2), (5, 0.9)]) == 0.0   # no pair with b > a


class KnownAccuracy:
    """A fake budget-forced reasoner: right exactly when its cap allows >= `need` thinking tokens
    (no cap: always); suppressions make it wrong; a known curve."""

    def __init__(self, need: int):
        self.need = need

    def complete(self, prompts, temperature, top_p, generator, max_new_tokens):
        return self.complete_forced(prompts, temperature, top_p, generator, max_new_tokens)

    def starting_point(self):
        return None

    def complete_forced(self, prompts, temperature, top_p, generator, max_new_tokens, max_thinking=None,
                        extensions=0, wait=False):
        out = []
        for p in prompts:
            total = sum(int(x) for x in p.rstrip("=").split("+"))
            think = self.need if max_thinking is None else min(self.need, max_thinking)
            right = think >= self.need and extensions == 0
            out.append(A.completion("1" * think, total if right else total + 1))
        return out


def test_the_evaluator_on_a_fake_with_a_known_curve():
    agent = KnownAccuracy(need=10)
    assert isinstance(agent, BudgetForcedReasoner) and isinstance(agent, Reasoner)
    config = SimpleNamespace(min_operands=3, max_operands=4, max_operand=9)
    opts = BudgetForcingOptions(n=6, caps=[0, 4, 16], samples=2, extensions=[1], waits=[1], sampled_curve=True)
    res = budget_forcing(agent, config, opts)
    m = res.metrics
    assert (m["greedy_cap0"], m["greedy_cap4"], m["greedy_cap16"], m["sampled_cap16"]) == (0.0, 0.0, 1.0, 1.0)
    assert (m["think_cap0"], m["think_cap4"], m["think_cap16"]) == (0.0, 4.0, 10.0)
    assert m["within_budget"] == 1.0 and m["greedy_natural"] == 1.0 and m["sampled_natural"] == 1.0
    assert m["ignore1_gain"] == -1.0 and m["wait1_gain"] == -1.0 and m["greedy_ignore1_gain"] == -1.0
    assert m["cap_min_step"] == 0.0 and m["performance"] == 1.0
    assert m["scaling"] == pytest.approx((0 + 1 / 10 + 1 / 6) / 3)
    assert derived_metrics(res) == pytest.approx({k: m[k] for k in ("cap_min_step", "scaling", "performance")})
    assert budget_forcing(agent, SimpleNamespace(), opts).metrics == {}


# -- training end to end ---------------------------------------------------------------------------
@pytest.mark.parametrize("method,selection", [("r1_sft", "curated"), ("s1k", "curated"), ("s1k", "random")])
def test_tiny_runs_and_round_trip(tmp_path, method, selection):
    cfg = s1.Config(method=method, selection=selection, n_layer=1, n_head=2, n_embd=16, sft_steps=3, sft_batch=4,
                    warmup_steps=1, pool_size=200, set_size=20, log_every=1, eval_every=3, eval_problems=4)
    agent = s1.train(cfg, QuietRun(seed=1))
    agent.save(tmp_path / "a.safetensors")
    again = s1.build(cfg).load(tmp_path / "a.safetensors")
    prompts = ["1+2+3=", "4+5+6+7="]
    a = agent.complete_forced(prompts, 0.0, 1.0, torch.Generator(), 40, max_thinking=5, extensions=1, wait=True)
    b = again.complete_forced(prompts, 0.0, 1.0, torch.Generator(), 40, max_thinking=5, extensions=1, wait=True)
    assert a == b and all(A.thinking_length(t) <= 5 for t in a)
    res = budget_forcing(agent, cfg, BudgetForcingOptions(n=3, caps=[0, 8], samples=1, extensions=[1], waits=[1]))
    assert res.metrics["within_budget"] == 1.0


def test_the_set_is_a_function_of_the_seed():
    cfg = s1.Config(pool_size=500, set_size=50)
    assert s1.training_set(cfg, 3) == s1.training_set(cfg, 3)
    assert s1.training_set(cfg, 3) != s1.training_set(cfg, 4)
