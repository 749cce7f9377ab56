"""Mamba: the selective scan against a naive loop in float64 and its hand-written backward against
autograd (gradcheck); no (b, L, d, N) tensor saved for the backward pass; the LTI convolution
against the recurrence; the block against transformers' MambaMixer (its pure-PyTorch path) on
copied weights; the recurrent step against the parallel scan; the task generators, evaluators and
the full tier's data path."""

import math

import numpy as np
import pytest
import torch

from evals.contract import SequenceModel
from evals.evaluators import REGISTRY, _load_builtin, derived_metrics
from evals.evaluators.sequence_accuracy import SequenceAccuracyOptions
from evals.tasks import sequence_tasks, token_files
from reproductions.mamba import decode, lm, mamba
from reproductions.mamba.model import MambaConfig, MambaLM, MambaMixer
from reproductions.mamba.scan import lti_convolution, lti_kernel, selective_scan, ssm_step

F64 = torch.float64


def naive_ssm(u, delta, A, B, C, D):
    """Eq. (2) and (4) written out: h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t h_t + D u_t,
    one time step and one channel at a time."""
    b, L, d = u.shape
    y = torch.zeros(b, L, d, dtype=u.dtype)
    for i in range(b):
        for c in range(d):
            h = torch.zeros(A.shape[1], dtype=u.dtype)
            for t in range(L):
                Bt = B[i, t] if B.dim() == 3 else B[c]
                Ct = C[i, t] if C.dim() == 3 else C[c]
                h = torch.exp(delta[i, t, c] * A[c]) * h + delta[i, t, c] * Bt * u[i, t, c]
                y[i, t, c] = (Ct * h).sum() + D[c] * u[i, t, c]
    return y


def _inputs(b=2, L=11, d=3, N=4, selective=True, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, L, d, generator=g, dtype=dtype)
    A = -torch.rand(d, N, generator=g, dtype=dtype) - 0.2
    if selective:
        delta = torch.rand(b, L, d, generator=g, dtype=dtype) * 0.5
        B, C = torch.randn(b, L, N, generator=g, dtype=dtype), torch.randn(b, L, N, generator=g, dtype=dtype)
    else:
        delta = torch.rand(d, generator=g, dtype=dtype) * 0.5
        B, C = torch.randn(d, N, generator=g, dtype=dtype), torch.randn(d, N, generator=g, dtype=dtype)
    D = torch.randn(d, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (u, delta, A, B, C, D)]


@pytest.mark.parametrize("chunk", [1, 4, 64])
@pytest.mark.parametrize("selective", [True, False])
def test_scan_equals_naive_loop_in_float64(chunk, selective):
    u, delta, A, B, C, D = _inputs(selective=selective)
    d_full = delta if selective else delta.expand_as(u)
    torch.testing.assert_close(selective_scan(u, delta, A, B, C, D, chunk=chunk), naive_ssm(u, d_full, A, B, C, D),
                               atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("selective", [True, False])
def test_hand_written_backward_passes_gradcheck(selective):
    u, delta, A, B, C, D = _inputs(b=2, L=7, d=3, N=2, selective=selective, seed=1)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk=3), (u, delta, A, B, C, D))


def test_backward_with_initial_and_final_state_passes_gradcheck():
    u, delta, A, B, C, D = _inputs(b=2, L=5, d=2, N=3, seed=2)
    h0 = torch.randn(2, 2, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a[:6], h0=a[6], chunk=2, return_state=True),
                                    (u, delta, A, B, C, D, h0))


def test_backward_equals_autograd_through_the_naive_loop():
    u, delta, A, B, C, D = _inputs(b=1, L=6, d=2, N=3, seed=3)
    grad = torch.randn(1, 6, 2, dtype=F64)
    ours = torch.autograd.grad(selective_scan(u, delta, A, B, C, D, chunk=4), (u, delta, A, B, C, D), grad)
    ref = torch.autograd.grad(naive_ssm(u, delta, A, B, C, D), (u, delta, A, B, C, D), grad)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=1e-10)


def test_scan_saves_no_tensor_of_the_size_of_all_states():
    b, L, d, N = 2, 64, 8, 16
    u, delta, A, B, C, D = _inputs(b, L, d, N, seed=4, dtype=torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        selective_scan(u, delta, A, B, C, D, chunk=16).sum().backward()
    # the inputs (b L d, b L N) and one state per chunk (b, L / 16, d, N): 1/16 of all the states
    assert saved and max(saved) <= b * L * max(d, N) and sum(saved) < b * L * d * N / 2


def test_lti_convolution_equals_the_recurrence():
    u, delta, A, B, C, D = _inputs(b=2, L=40, d=3, N=5, selective=False, seed=5)
    torch.testing.assert_close(lti_convolution(u, delta, A, B, C, D), selective_scan(u, delta, A, B, C, D),
                               atol=1e-10, rtol=1e-10)
    # eq. (3b): K_bar_k = C A_bar^k B_bar, by matrix powers of the diagonal A_bar for one channel
    K = lti_kernel(delta, A, B, C, 6)
    Abar = torch.diag(torch.exp(delta[0] * A[0]))
    for k in range(6):
        want = C[0] @ torch.linalg.matrix_power(Abar, k) @ (delta[0] * B[0])
        torch.testing.assert_close(K[0, k], want)


# transformers' slow path rounds B (and A) to float32 even for a float64 module, hence 1e-6 there
@pytest.mark.parametrize("dtype,tol", [(F64, 1e-6), (torch.float32, 1e-5)])
def test_block_equals_transformers_mamba_mixer_slow_path(dtype, tol):
    from transformers import MambaConfig as HFConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer as HFMixer

    torch.manual_seed(0)
    cfg = MambaConfig(d_model=32, d_state=8, chunk=7)
    ours = MambaMixer(cfg).to(dtype)
    hf = HFMixer(HFConfig(hidden_size=32, state_size=8, expand=2, conv_kernel=4, time_step_rank=cfg.rank,
                          use_bias=False, use_conv_bias=True, num_hidden_layers=1), layer_idx=0).to(dtype).eval()
    with torch.no_grad():  # perturb the initial values so every parameter matters
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.load_state_dict(ours.state_dict())
    x = torch.randn(3, 23, 32, dtype=dtype)
    torch.testing.assert_close(ours(x), hf(x), atol=tol, rtol=tol)


@pytest.mark.parametrize("selective", [True, False])
def test_recurrent_step_equals_the_parallel_scan(selective):
    torch.manual_seed(1)
    model = MambaLM(MambaConfig(d_model=16, d_state=4, chunk=5, selective=selective)).double()
    idx = torch.randint(18, (2, 15))
    full = model(idx)
    logits, states = model.prefill(idx[:, :2])   # shorter than the convolution's window
    steps = [logits[:, -1]]
    for t in range(2, 15):
        logits, states = model.step(idx[:, t], states)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 1:], atol=1e-10, rtol=1e-10)


def test_ssm_step_is_one_step_of_the_scan():
    u, delta, A, B, C, D = _inputs(b=2, L=1, d=3, N=4, seed=6)
    h0 = torch.randn(2, 3, 4, dtype=F64)
    y, h = selective_scan(u, delta, A, B, C, D, h0=h0, return_state=True)
    y1, h1 = ssm_step(h0, u[:, 0], delta[:, 0], A, B[:, 0, None, :], C[:, 0, None, :], D)
    torch.testing.assert_close(y[:, 0], y1)
    torch.testing.assert_close(h, h1)


def test_selective_copying_generator():
    x, y = sequence_tasks.selective_copying(50, 20, 5, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (50, 25)
    assert (x[:, 20:] == 17).all() and (y[:, :20] == sequence_tasks.IGNORE).all()
    for row_x, row_y in zip(x, y):
        data = row_x[:20][row_x[:20] != 0]
        assert len(data) == 5 and torch.equal(data, row_y[20:]) and ((1 <= data) & (data <= 16)).all()


def test_induction_heads_generator():
    x, y = sequence_tasks.induction_heads(200, 30, 16, torch.Generator().manual_seed(0))
    assert x.shape == (200, 30) and (y[:, :-1] == sequence_tasks.IGNORE).all() and (x[:, -1] == 0).all()
    for row_x, row_y in zip(x, y):
        first = (row_x == 0).nonzero()[:, 0]
        assert len(first) == 2 and first[0] < 28 and row_y[-1] == row_x[first[0] + 1]


class _Oracle:
    """Reads the answer off the input: a perfect selective copier."""

    def next_token_logits(self, tokens):
        logits = torch.zeros(*tokens.shape, 18)
        for i, row in enumerate(tokens):
            data = row[(row != 0) & (row != 17)]
            logits[i, -8:] = torch.nn.functional.one_hot(data, 18).float()
        return logits


def test_sequence_accuracy_scores_an_oracle_perfectly_and_chance_low():
    _load_builtin()
    ev = REGISTRY["sequence_accuracy"]
    cfg = mamba.Config(n_data=16, n_memorize=8)
    opts = SequenceAccuracyOptions(task="selective_copying", lengths=[32, 64], n=20, batch_size=8, prefix="copy_")
    assert isinstance(_Oracle(), SequenceModel)
    res = ev(_Oracle(), cfg, opts)
    assert res.metrics == {"copy_accuracy_L32": 1.0, "copy_accuracy_L64": 1.0} and len(res.samples["copy_accuracy_L32"]) == 20
    untrained = ev(mamba.build(cfg).eval(), cfg, opts)
    assert untrained.metrics["copy_accuracy_L32"] < 0.3
    other = ev(_Oracle(), mamba.Config(task="induction_heads"), opts)
    assert other.metrics == {} and "not_scored" in other.protocol


def test_decode_cost_metrics_recompute_from_samples(tmp_path):
    from evals.contract import QuietRun

    _load_builtin()
    cfg = decode.Config(context_lengths=[16, 64], new_tokens=2, repeats=1, d_model=16)
    measured = decode.train(cfg, QuietRun(folder=tmp_path))
    res = REGISTRY["decode_cost"](measured, cfg, REGISTRY["decode_cost"].options())
    assert set(res.metrics) >= {"decode_growth_mamba", "decode_growth_attention", "decode_cost_ratio_attention_to_mamba"}
    assert derived_metrics(res) == pytest.approx(res.metrics)
    assert (tmp_path / "decode_cost.png").is_file()
    again = decode.DecodeCost(cfg)
    measured.save(tmp_path / "m.safetensors")
    assert again.load(tmp_path / "m.safetensors").seconds_per_token == measured.seconds_per_token


def test_save_load_round_trip(tmp_path):
    cfg = mamba.Config(d_model=16, length=16)
    a, b = mamba.build(cfg), mamba.build(cfg)
    a.save(tmp_path / "a.safetensors")
    b.load(tmp_path / "a.safetensors")
    x = torch.randint(18, (2, 20))
    torch.testing.assert_close(a.next_token_logits(x), b.next_token_logits(x))


def _token_root(folder, vocab=50277, n_train=5000, n_val=3000):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rng.integers(0, vocab, n_train, dtype=np.uint16).tofile(folder / "train.bin")
    rng.integers(0, vocab, n_val, dtype=np.uint16).tofile(folder / "validation.bin")
    return folder


def test_full_tier_names_the_missing_pile(tmp_path):
    missing = lm.required_data(lm.Config(data_root=str(tmp_path / "pile")))
    assert len(missing) == 2 and str(tmp_path / "pile" / "train.bin") in missing[0]


def test_full_tier_is_the_130m_model_and_dry_runs_on_token_files(tmp_path, capsys):
    from evals.cli import main

    root = _token_root(tmp_path / "pile", n_val=200)  # windows of 64 (not 2,048) keep the 130M model's evaluation short
    assert main(["reproduce", "mamba", "--tier", "full", "--dry-run", "--set", f"data_root={root}", "--set", "context=64"]) == 0
    out = capsys.readouterr().out
    n = int(out.split("built LanguageModel: ")[1].split(" parameters")[0].replace(",", ""))
    assert 125e6 < n < 135e6, n  # "Mamba-130M": 24 layers, d_model 768, vocabulary 50,280
    assert "dry run of mamba/full" in out


def test_token_perplexity_of_a_uniform_model_is_the_vocabulary(tmp_path):
    _load_builtin()
    root = _token_root(tmp_path / "pile", vocab=100, n_val=1000)

    class Uniform:
        def next_token_logits(self, tokens):
            return torch.zeros(*tokens.shape, 100)

    ev = REGISTRY["token_perplexity"]
    cfg = lm.Config(data_root=str(root), context=64)
    res = ev(Uniform(), cfg, ev.options(tokens=640, batch_size=4, prefix="pile_"))
    assert res.metrics["pile_perplexity"] == pytest.approx(100) and len(res.samples["pile_window_loss"]) == 10
    assert derived_metrics(res) == pytest.approx(res.metrics)
    x, y = token_files.random_windows(token_files.tokens(root, "train"), 3, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, 16) and torch.equal(x[:, 1:], y[:, :-1])


def test_curriculum_grows_in_steps_of_eight_to_the_training_length():
    cfg = mamba.Config(length=128, curriculum_start=16, curriculum_steps=2000)
    lengths = [mamba.length_at(s, cfg) for s in range(0, 2100, 50)]
    assert lengths[0] == 16 and lengths[-1] == 128 and all(a <= b for a, b in zip(lengths, lengths[1:]))
    assert all(n % 8 == 0 for n in lengths) and math.isclose(mamba.lr_at(99, cfg), cfg.lr)
