"""Speculative decoding (arXiv 2211.17192): Algorithm 1's output distribution against the
target's (an identity, exact probabilities, and a chi-square test over many draws that also shows
it rejects the draft's distribution), greedy outputs against the GPT's own `generate`, the KV-cache
rollback against a full forward pass, equation (1) and Theorem 3.8 against simulation and hand
values, the evaluator's statistics against scipy, and the Hugging Face GPT-2 conversion and
assisted generation against ours."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from reproductions.speculative import pair
from reproductions.speculative.decoders import GPTDecoder
from reproductions.speculative.speculative import (autoregressive_generate, beta, expected_tokens, probabilities,
                                                   residual, speculative_generate, verify, verify_greedy,
                                                   walltime_speedup)
from reproductions.transformer.gpt import GPT, GPTConfig


class BigramDecoder:
    """A toy decoder whose next-token logits depend on the last token only (a table), with a
    cache of the tokens it was fed: exact probabilities are known for any sequence."""

    def __init__(self, table: torch.Tensor):
        self.table, self.fed = table, []

    @property
    def length(self):
        return len(self.fed)

    def reset(self):
        self.fed = []

    def extend(self, tokens):
        self.fed += tokens.tolist()
        return self.table[tokens]

    def truncate(self, length):
        self.fed = self.fed[:length]


def _tables(v: int, seed: int, sharp: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(v, v, generator=g, dtype=torch.float64) * sharp, torch.randn(v, v, generator=g, dtype=torch.float64) * sharp


def _gpts(seed=0, vocab=40):
    torch.manual_seed(seed)
    target = GPT(GPTConfig(vocab_size=vocab, block_size=128, n_layer=2, n_head=2, n_embd=32)).eval()
    draft = GPT(GPTConfig(vocab_size=vocab, block_size=128, n_layer=1, n_head=2, n_embd=16)).eval()
    return target, draft


# -- Algorithm 1 is exact ------------------------------------------------------------------------
def test_acceptance_plus_residual_is_the_target_distribution():
    """Appendix A.1: P(x) = q(x) min(1, p(x)/q(x)) + (1 - beta) p'(x) = p(x), for any p, q (incl.
    q putting mass where p has none and the reverse)."""
    g = torch.Generator().manual_seed(0)
    for v in (2, 5, 50):
        for _ in range(20):
            p = torch.softmax(torch.randn(v, generator=g, dtype=torch.float64) * 3, 0)
            q = torch.softmax(torch.randn(v, generator=g, dtype=torch.float64) * 3, 0)
            p[0], q[1] = 0.0, 0.0
            p, q = p / p.sum(), q / q.sum()
            accept = torch.where(q > 0, q * torch.minimum(torch.ones_like(p), p / q.clamp_min(1e-300)), torch.zeros_like(p))
            reject = 1.0 - accept.sum()
            assert math.isclose(reject.item(), 1.0 - beta(p, q).item(), abs_tol=1e-12)  # Definition 3.1
            assert torch.allclose(accept + reject * residual(p, q), p, atol=1e-12)


def test_verify_accepts_with_probability_min_1_p_over_q():
    """One guess drawn from q is accepted with probability beta = sum min(p, q) (Corollary 3.6),
    counted over many calls of `verify`."""
    g = torch.Generator().manual_seed(1)
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=torch.float64)
    q = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    n, accepted = 40_000, 0
    for _ in range(n):
        x = int(torch.multinomial(q[0], 1, generator=g))
        accepted += verify(p, q, [x], g)[0]
    expected = beta(p[0], q[0]).item()  # 0.2 + 0.3 + 0.2 = 0.7
    assert expected == pytest.approx(0.7)
    assert accepted / n == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / n))


def _chi2_pvalue(counts: dict, probs: dict) -> float:
    from scipy.stats import chisquare

    keys = sorted(probs)
    n = sum(counts.values())
    return chisquare([counts.get(k, 0) for k in keys], [n * probs[k] for k in keys]).pvalue


def test_speculative_sampling_follows_the_target_joint_distribution():
    """The first three tokens of speculative decoding (vocab 3, gamma 2, bigram toy models whose
    exact probabilities are known) against the target's own joint p(x1) p(x2|x1) p(x3|x2), by a
    chi-square test over 6,000 draws; the same test rejects the draft's joint, so it has power."""
    v, n = 3, 6_000
    tp, tq = _tables(v, 3)
    target, draft = BigramDecoder(tp), BigramDecoder(tq)
    p, q = torch.softmax(tp, -1), torch.softmax(tq, -1)
    prompt = [0]
    exact = {s: (p[prompt[-1], s[0]] * p[s[0], s[1]] * p[s[1], s[2]]).item() for s in itertools.product(range(v), repeat=3)}
    g = torch.Generator().manual_seed(4)
    spec, alone = {}, {}
    for _ in range(n):
        s = tuple(speculative_generate(target, draft, prompt, 3, 2, 1.0, g).tokens)
        spec[s] = spec.get(s, 0) + 1
        d = tuple(autoregressive_generate(draft, prompt, 3, 1.0, g).tokens)
        alone[d] = alone.get(d, 0) + 1
    assert _chi2_pvalue(spec, exact) > 0.001
    assert _chi2_pvalue(alone, exact) < 1e-6


def test_temperature_zero_is_algorithm_1_with_one_hot_distributions():
    """`verify_greedy` (argmaxes only) gives what `verify` gives on one-hot p and q."""
    g = torch.Generator().manual_seed(5)
    for _ in range(200):
        logits_p, logits_q = torch.randn(4, 6, generator=g), torch.randn(3, 6, generator=g)
        p, q = probabilities(logits_p, 0.0), probabilities(logits_q, 0.0)
        guesses = q.argmax(-1).tolist()
        if torch.rand((), generator=g) < 0.5:  # make some guesses agree with the target
            guesses[:2] = p.argmax(-1).tolist()[:2]
            q[:2] = p[:2]
        assert verify_greedy(p.argmax(-1).tolist(), guesses) == verify(p, q, guesses, None, greedy=True)


# -- greedy mode and the KV cache ----------------------------------------------------------------
@pytest.mark.parametrize("gamma", [1, 2, 4, 7])
def test_greedy_output_is_the_targets_own(gamma):
    """Against the GPT's own generate without a cache (every step a full forward pass)."""
    target, draft = _gpts()
    prompt = torch.randint(40, (12,), generator=torch.Generator().manual_seed(gamma)).tolist()
    reference = target.generate(torch.tensor([prompt]), 60, use_cache=False)[0, 12:].tolist()
    out = speculative_generate(GPTDecoder(target), GPTDecoder(draft), prompt, 60, gamma)
    assert out.tokens == reference
    assert autoregressive_generate(GPTDecoder(target), prompt, 60).tokens == reference
    assert all(1 <= k <= gamma + 1 for k in out.per_iteration) and sum(out.per_iteration) >= 60


def test_a_perfect_draft_is_always_accepted():
    target, _ = _gpts()
    out = speculative_generate(GPTDecoder(target), GPTDecoder(target), [1, 2, 3], 40, 4, 1.0,
                               torch.Generator().manual_seed(0))
    assert out.per_iteration == [5] * 8


def test_cache_rollback_matches_a_full_forward_pass():
    """Extend, cut back, extend again: the logits equal one pass without a cache (float rounding)."""
    target, _ = _gpts()
    seq = torch.randint(40, (30,), generator=torch.Generator().manual_seed(2))
    full = target(seq[None])[0][0]
    dec = GPTDecoder(target)
    dec.extend(seq[:10])
    dec.extend(torch.randint(40, (6,)))  # a rejected guess run
    dec.truncate(10)
    assert dec.length == 10
    got = torch.cat([dec.extend(seq[10:20]), dec.extend(seq[20:21]), dec.extend(seq[21:])])
    assert torch.allclose(got, full[10:], atol=1e-5)


# -- Section 3's formulas --------------------------------------------------------------------------
def test_expected_tokens_formula_against_simulation_and_hand_values():
    assert expected_tokens(0.8, 3) == pytest.approx((1 - 0.8**4) / 0.2) == pytest.approx(2.952)
    assert expected_tokens(0.0, 5) == 1.0 and expected_tokens(1.0, 5) == 6.0
    g = torch.Generator().manual_seed(6)
    for alpha, gamma in [(0.5, 2), (0.75, 7), (0.9, 4)]:
        r = torch.rand(200_000, gamma, generator=g) < alpha  # i.i.d. acceptances (the paper's assumption)
        accepted = torch.where(r.all(1), gamma, (~r).float().argmax(1))
        assert (accepted + 1).float().mean().item() == pytest.approx(expected_tokens(alpha, gamma), rel=0.01)


def test_tokens_per_pass_of_the_sampler_match_equation_1_when_beta_is_constant():
    """Toy models whose every row overlaps by exactly alpha (q shifts a share 1 - alpha of p's mass
    to another token): the sampler's measured tokens per pass approach equation (1)."""
    v, alpha, gamma = 4, 0.7, 3
    p = torch.full((v, v), 1.0 / v, dtype=torch.float64)
    q = alpha * p + (1 - alpha) * torch.eye(v, dtype=torch.float64)[torch.tensor([1, 2, 3, 0])]
    assert torch.allclose(beta(p, q), torch.full((v,), alpha + (1 - alpha) / v, dtype=torch.float64))
    a = alpha + (1 - alpha) / v
    out = speculative_generate(BigramDecoder(p.log()), BigramDecoder(q.log()), [0], 20_000, gamma, 1.0,
                               torch.Generator().manual_seed(7))
    assert sum(out.per_iteration) / len(out.per_iteration) == pytest.approx(expected_tokens(a, gamma), rel=0.02)


def test_walltime_speedup_theorem_3_8():
    # (1 - 0.8^4) / (0.2 * (3 * 0.1 + 1)) and with a verification pass costing 2 steps
    assert walltime_speedup(0.8, 3, 0.1) == pytest.approx(2.952 / 1.3)
    assert walltime_speedup(0.8, 3, 0.1, verify_cost=2.0) == pytest.approx(2.952 / 2.3)
    assert walltime_speedup(0.0, 1, 0.5) < 1.0  # Corollary 3.9's condition fails: slower
    # simulated: passes cost gamma c + 1 steps each, the target alone one step per token
    g = torch.Generator().manual_seed(8)
    alpha, gamma, c = 0.8, 4, 0.05
    r = torch.rand(100_000, gamma, generator=g) < alpha
    tokens = (torch.where(r.all(1), gamma, (~r).float().argmax(1)) + 1).sum().item()
    assert tokens / (len(r) * (gamma * c + 1)) == pytest.approx(walltime_speedup(alpha, gamma, c), rel=0.01)


# -- the evaluator ----------------------------------------------------------------------------------
def test_evaluator_chi2_against_scipy_and_formulas_against_the_paper_module():
    from scipy.stats import chi2

    from evals.evaluators import speculative_decoding as ev

    for stat, dof in [(3.2, 1), (40.0, 30), (0.1, 7), (250.0, 200)]:
        assert ev.chi2_sf(stat, dof) == pytest.approx(chi2.sf(stat, dof), rel=1e-6)
    for alpha, gamma in [(0.3, 1), (0.88, 7), (1.0, 3)]:
        assert ev.expected_tokens(alpha, gamma) == pytest.approx(expected_tokens(alpha, gamma))
    groups = ev.bins([0.5, 0.3, 0.15, 0.04, 0.01], 100, 5.0)
    assert groups == [[0], [1], [2], [3, 4]]  # 4 + 1 < 5: pooled into the smallest single bin
    assert sorted(t for gr in groups for t in gr) == list(range(5))


def _tiny_pair_cfg(**kw):
    return pair.Config(target_layers=1, target_embd=16, target_heads=2, draft_layers=1, draft_embd=8, draft_heads=2,
                       block_size=48, gammas=[1, 2], prompts=2, prompt_len=8, new_tokens=12, draws=30,
                       draw_prefixes=2, draw_gamma=2, cost_repeats=2, **kw)


def test_measurements_through_the_evaluator_derive_and_round_trip(tmp_path):
    """Untrained tiny models: the evaluator's metrics recompute from its samples (derive), greedy
    outputs are the target's, and a checkpoint round trip keeps weights and measurements."""
    from evals.evaluators import derived_metrics
    from evals.evaluators.speculative_decoding import SpeculativeOptions, speculative_decoding

    cfg = _tiny_pair_cfg()
    torch.manual_seed(0)
    agent = pair.build(cfg)
    target, draft = agent.decoders()
    prompts = [list(range(i, i + 8)) for i in (3, 40)]
    agent.measurements = pair.measure(target, draft, prompts, prompts, gammas=cfg.gammas, new_tokens=cfg.new_tokens,
                                      draws=cfg.draws, draw_gamma=cfg.draw_gamma, cost_repeats=2, seed=1)
    result = speculative_decoding(agent, cfg, SpeculativeOptions())
    assert result.metrics["greedy_identical"] == 1.0
    assert 0.0 <= result.metrics["alpha_greedy"] <= 1.0 and 0.0 <= result.metrics["chi2_pvalue"] <= 1.0
    derived = derived_metrics(result)
    assert derived.keys() == result.metrics.keys()
    assert all(derived[k] == pytest.approx(v) for k, v in result.metrics.items())
    # repro verify's consistency check: a speed-up that the per-prompt times do not give is caught
    from pathlib import Path

    from evals.verify.checks import check_metrics
    from evals.verify.report import RecordReport
    from tests.factories import make_record

    def failures(res):
        rec = make_record().model_copy(update={"evaluations": [res], "metrics": dict(res.metrics)})
        rep = RecordReport(Path("r.json"))
        check_metrics(rec, rep)
        return [f.field for f in rep.failures]

    assert failures(result) == []
    edited = result.model_copy(update={"metrics": {**result.metrics, "speedup_greedy_g2": 9.0}})
    assert failures(edited) == ["evaluations[0].metrics.speedup_greedy_g2"]
    agent.save(tmp_path / "pair.safetensors")
    other = pair.build(cfg).load(tmp_path / "pair.safetensors")
    assert other.seconds == agent.seconds and other.draws == agent.draws
    assert all(torch.equal(a, b) for a, b in zip(agent.state_dict().values(), other.state_dict().values()))


# -- the peer: Hugging Face's GPT-2 and assisted generation ------------------------------------------
def test_gpt2_conversion_and_assisted_generation_match_ours():
    """The converted GPT-2 gives our GPT's logits; transformers' greedy generate and its assisted
    generation (speculative decoding with our draft converted) give our greedy tokens."""
    pytest.importorskip("transformers")
    from reproductions.speculative.hf_peer import assisted_generate, hf_greedy, to_gpt2

    target, draft = _gpts(3)
    target_hf, draft_hf = to_gpt2(target), to_gpt2(draft)
    x = torch.randint(40, (2, 50), generator=torch.Generator().manual_seed(9))
    assert torch.allclose(target_hf(x).logits, target(x)[0], atol=1e-5)
    prompt = x[0, :10].tolist()
    ours = speculative_generate(GPTDecoder(target), GPTDecoder(draft), prompt, 40, 3).tokens
    assert hf_greedy(target_hf, prompt, 40) == ours
    assert assisted_generate(target_hf, draft_hf, prompt, 40, 3) == ours


def test_hf_decoder_rollback_matches_a_full_forward_pass():
    """The Hugging Face cache wrapper (used for T5 in the full tier) cut back like ours."""
    pytest.importorskip("transformers")
    from reproductions.speculative.decoders import HFDecoder
    from reproductions.speculative.hf_peer import to_gpt2

    target, draft = _gpts(4)
    dec = HFDecoder(to_gpt2(target))
    seq = torch.randint(40, (24,), generator=torch.Generator().manual_seed(10))
    full = target(seq[None])[0][0]
    dec.extend(seq[:8])
    dec.extend(torch.tensor([1, 2, 3]))
    dec.truncate(8)
    got = torch.cat([dec.extend(seq[8:16]), dec.extend(seq[16:])])
    assert dec.length == 24 and torch.allclose(got, full[8:], atol=1e-5)
    prompt = seq[:6].tolist()
    assert (speculative_generate(HFDecoder(to_gpt2(target)), HFDecoder(to_gpt2(draft)), prompt, 30, 4).tokens
            == autoregressive_generate(GPTDecoder(target), prompt, 30).tokens)


# -- the full tier ----------------------------------------------------------------------------------
def test_full_tier_names_missing_weights_and_runs_on_its_stand_in(tmp_path):
    """Without the checkpoints the full tier names them; on the tiny T5 stand-in the pair builds,
    decodes speculatively (greedy identical to the target, encoder-decoder cache cut back) and the
    evaluator scores its measurements."""
    pytest.importorskip("transformers")
    from evals.evaluators.speculative_decoding import SpeculativeOptions, speculative_decoding
    from reproductions.speculative import full, stand_ins

    cfg = full.Config(target_checkpoint=str(tmp_path / "none"), sources=str(tmp_path / "none.en"))
    missing = full.required_data(cfg)
    assert len(missing) == 3 and "T5-XXL" in missing[0] and "none" in missing[0]
    stand_in = stand_ins.stand_in_data(cfg, tmp_path / "data")
    assert full.required_data(stand_in) == []
    agent = full.build(stand_in)
    step = full.dry_run_step(agent, stand_in)
    assert step["identical_to_target"] == 1.0
    result = speculative_decoding(agent, stand_in, SpeculativeOptions())
    assert result.metrics["greedy_identical"] == 1.0 and "speedup_greedy_g3" in result.metrics
