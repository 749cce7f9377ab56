"""Muon's math against independent references: the quintic Newton-Schulz iteration against an SVD
(U phi^5(S) V^T with the scalar polynomial, and the band around 1 its singular values land in), the
momentum and Nesterov steps worked by hand, and one optimiser step against PyTorch's own
`torch.optim.Muon` on identical gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reproductions.muon import hybrid, image
from reproductions.muon import lm as muon_lm
from reproductions.muon.muon import NS_COEFFICIENTS, Muon, newton_schulz5, shape_scale, split_parameters


def matrix_with_singular_values(s: np.ndarray, rows: int, cols: int, seed: int = 0):
    """G = U diag(s) V^T with random orthonormal U (rows x k) and V (cols x k), in float64."""
    rng = np.random.default_rng(seed)
    k = len(s)
    u = np.linalg.qr(rng.standard_normal((rows, k)))[0]
    v = np.linalg.qr(rng.standard_normal((cols, k)))[0]
    return u, v, u @ np.diag(s) @ v.T


def quintic(x: np.ndarray, steps: int = 5) -> np.ndarray:
    """phi(s) = a s + b s^3 + c s^5, iterated: what (M3) does to each singular value (written out)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


def test_coefficients_are_the_posts():
    assert NS_COEFFICIENTS == (3.4445, -4.7750, 2.0315)
    a, b, c = NS_COEFFICIENTS
    # the slope at zero is a, far above the cubic Newton-Schulz iteration's 1.5; and phi(1) is near 1
    assert a > 3 and abs(a + b + c - 0.701) < 1e-9


@pytest.mark.parametrize("rows,cols", [(16, 48), (48, 16), (32, 32)])
def test_newton_schulz_acts_on_singular_values_as_the_scalar_quintic(rows, cols):
    k = min(rows, cols)
    s = np.geomspace(0.05, 1.0, k) * 7.0
    u, v, g = matrix_with_singular_values(s, rows, cols)
    ours = newton_schulz5(torch.tensor(g), dtype=torch.float64).numpy()
    # the reference: the SVD, each singular value normalised by the Frobenius norm (+ eps 1e-7, as in
    # the post's code) and sent through phi^5
    expected = u @ np.diag(quintic(s / (np.linalg.norm(s) + 1e-7))) @ v.T
    np.testing.assert_allclose(ours, expected, atol=1e-9)
    assert ours.shape == (rows, cols)


def test_orthogonalised_singular_values_land_in_a_band_around_one():
    """The post: Newton-Schulz gives U S' V^T with S' 'roughly Uniform(0.5, 1.5)' rather than U V^T."""
    torch.manual_seed(0)
    g = torch.randn(64, 256, dtype=torch.float64)
    out = newton_schulz5(g, dtype=torch.float64)
    sv = torch.linalg.svdvals(out)
    assert sv.min() > 0.5 and sv.max() < 1.5
    # the singular vectors are the SVD's: U^T O V is diagonal (O = U S' V^T)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    core = u.T @ out @ vh.T
    off = core - torch.diag(torch.diagonal(core))
    assert off.abs().max() < 1e-8
    # and it is near U V^T, the exact orthogonalisation (singular values all 1)
    polar = u @ vh
    assert (out - polar).norm() / polar.norm() < 0.3


def test_bfloat16_iteration_stays_in_the_band():
    torch.manual_seed(1)
    out = newton_schulz5(torch.randn(128, 64), dtype=torch.bfloat16)
    assert out.dtype == torch.float32
    sv = torch.linalg.svdvals(out)
    assert sv.min() > 0.5 and sv.max() < 1.5


def test_shape_scale():
    assert shape_scale(torch.Size([512, 128]), "original") == pytest.approx(2.0)
    assert shape_scale(torch.Size([128, 512]), "original") == 1.0
    assert shape_scale(torch.Size([768, 3072]), "record") == pytest.approx(math.sqrt(3072))


def test_momentum_and_nesterov_by_hand():
    """With no Newton-Schulz iterations (ns_steps=0) the update is U_t / ||U_t||_F: check (M1), (M2)
    and (M5) against the formulas worked out for two steps."""
    w0 = torch.zeros(2, 3, dtype=torch.float64)
    p = torch.nn.Parameter(w0.clone())
    opt = Muon([p], lr=0.1, momentum=0.9, nesterov=True, ns_steps=0, scaling="none", ns_dtype=torch.float64)
    g1 = torch.tensor([[1.0, 0, 0], [0, 2, 0]], dtype=torch.float64)
    g2 = torch.tensor([[0.0, 1, 0], [0, 0, 3]], dtype=torch.float64)
    p.grad = g1.clone()
    opt.step()
    b1 = g1                        # B_1 = G_1
    u1 = g1 + 0.9 * b1             # U_1 = G_1 + mu B_1
    w1 = w0 - 0.1 * u1 / u1.norm()
    torch.testing.assert_close(p.data, w1, atol=1e-6, rtol=0)  # the eps in the normalisation
    p.grad = g2.clone()
    opt.step()
    b2 = 0.9 * b1 + g2
    u2 = g2 + 0.9 * b2
    torch.testing.assert_close(p.data, w1 - 0.1 * u2 / u2.norm(), atol=1e-6, rtol=0)


def test_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def test_newton_schulz_matches_torchs_on_identical_inputs():
    """(M3) against torch.optim.Muon's own iteration on identical inputs. torch runs it in
    bfloat16 with fused multiply-adds (addmm), the post's code with separate products, so the two
    bfloat16 results differ by rounding (a few percent after five iterations that amplify small
    singular values 3.4x each); both lie within that of the exact float64 iteration, and the
    classic cubic iteration's coefficients would not."""
    from torch.optim._muon import _zeropower_via_newtonschulz as torch_ns

    gen = torch.Generator().manual_seed(2)
    for shape in [(96, 32), (32, 96), (48, 48)]:
        g = torch.randn(*shape, generator=gen)
        exact = newton_schulz5(g.double(), dtype=torch.float64).float()
        theirs = torch_ns(g, NS_COEFFICIENTS, 5, 1e-7).float()
        ours = newton_schulz5(g, dtype=torch.bfloat16)
        for out in (ours, theirs):
            assert (out - exact).norm() / exact.norm() < 0.06, shape
        assert (ours - theirs).norm() / theirs.norm() < 0.08, shape
        cubic = newton_schulz5(g.double(), coefficients=(1.5, -0.5, 0.0), dtype=torch.float64).float()
        assert (cubic - theirs).norm() / theirs.norm() > 0.15, shape


def _run(opt_factory, grads, shapes, seed=0):
    """Parameters after `opt_factory`'s optimiser took the given gradients, one list per step."""
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(*s, dtype=torch.float64) * 0.1) for s in shapes]
    opt = opt_factory(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach().clone() for p in params]


SHAPES = [(96, 32), (32, 96), (48, 48)]


def _grads(n: int, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(*s, generator=gen, dtype=torch.float64) for s in SHAPES] for _ in range(n)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_optimizer_steps_match_torch_optim_muon(monkeypatch, weight_decay):
    """One and three steps of ours against torch.optim.Muon on identical gradients. torch iterates
    in bfloat16 and keeps an averaged momentum ((1 - mu) times ours); with both iterations in float64
    (torch's swapped for (M3) in float64, the iteration itself being tested above) the remaining
    conventions, Nesterov, (M4)'s 'original' scaling and the decoupled weight decay, agree to 1e-8
    (what is left is the normalisation's eps of 1e-7 against torch's 20x smaller averaged buffer)."""
    import torch.optim._muon as torch_muon

    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz",
                        lambda g, coefficients, steps, eps: newton_schulz5(g, steps, coefficients, eps, dtype=torch.float64))
    hp = dict(lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=weight_decay)
    for n in (1, 3):
        grads = _grads(n)
        ours = _run(lambda ps: Muon(ps, scaling="original", ns_dtype=torch.float64, **hp), grads, SHAPES)
        theirs = _run(lambda ps: torch.optim.Muon(ps, adjust_lr_fn="original", **hp), grads, SHAPES)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, atol=1e-8, rtol=0)
    # the test can fail: another momentum rule, or another scaling, gives another update
    grads = _grads(3)
    theirs = _run(lambda ps: torch.optim.Muon(ps, adjust_lr_fn="original", **hp), grads, SHAPES)
    for wrong in ({"nesterov": False}, {"scaling": "record"}):
        other = _run(lambda ps: Muon(ps, ns_dtype=torch.float64, **{"scaling": "original", **hp, **wrong}), grads, SHAPES)
        assert max((a - b).abs().max().item() for a, b in zip(other, theirs)) > 1e-4, wrong


def test_bfloat16_optimizer_matches_torch_up_to_rounding():
    """Unpatched: ours in bfloat16 (and in float32, the mini tier's) against torch.optim.Muon, the
    updates within bfloat16's rounding of each other."""
    grads = _grads(3)
    hp = dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0)
    start = _run(lambda ps: torch.optim.SGD(ps, lr=0.0), grads[:1], SHAPES)
    theirs = _run(lambda ps: torch.optim.Muon(ps, **hp), grads, SHAPES)
    for dtype in (torch.bfloat16, torch.float32):
        ours = _run(lambda ps: Muon(ps, ns_dtype=dtype, **hp), grads, SHAPES)
        for w0, a, b in zip(start, ours, theirs):
            assert ((a - w0) - (b - w0)).norm() / (b - w0).norm() < 0.08


def test_split_gives_muon_the_hidden_matrices_only():
    cfg = muon_lm.Config(n_layer=2, n_head=2, n_embd=16, block_size=16)
    model = muon_lm.build(cfg)
    hidden, rest = split_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)].split(".")[-2] for p in hidden) == sorted(["w_q", "w_k", "w_v", "w_o", "w_1", "w_2"] * 2)
    assert {names[id(p)] for p in rest} >= {"gpt.wte.weight", "gpt.position.wpe.weight", "gpt.ln_f.weight"}
    assert len(hidden) + len(rest) == len(list(model.parameters()))
    opts = muon_lm.optimizers(model, cfg)
    assert isinstance(opts[0], Muon) and isinstance(opts[1], torch.optim.AdamW)
    assert isinstance(muon_lm.optimizers(model, muon_lm.Config(**{**cfg.__dict__, "optimizer": "muon_torch"}))[0],
                      torch.optim.Muon)
    with pytest.raises(ValueError, match="optimizer"):
        muon_lm.optimizers(model, muon_lm.Config(**{**cfg.__dict__, "optimizer": "sgd"}))


def test_image_split_leaves_embeddings_and_head_to_adamw():
    cfg = image.Config(dataset="digits", image_size=8, patch_size=2, dim=16, depth=2, heads=2, mlp_dim=32, head_hidden=0)
    model = image.build(cfg)
    muon, adamw = image.optimizers(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    taken = {names[id(p)] for p in muon.param_groups[0]["params"]}
    assert taken and all(n.startswith("blocks.") and n.endswith("weight") for n in taken)
    others = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert not taken & others and len(taken | others) == len(names)
    assert {"patch_embed.weight", "head.weight", "pos_embed", "cls_token"} <= others


def test_schedule_moves_both_rates_together():
    cfg = muon_lm.Config(n_layer=1, n_head=2, n_embd=16, block_size=16, steps=100, warmup_steps=10, lr=0.004,
                         min_lr=0.0004, muon_lr=0.02)
    opts = muon_lm.optimizers(muon_lm.build(cfg), cfg)
    muon_lm.set_learning_rates(opts, 55, cfg)
    ratio = opts[1].param_groups[0]["lr"] / cfg.lr
    assert opts[0].param_groups[0]["lr"] == pytest.approx(cfg.muon_lr * ratio)
    assert 0.1 < ratio < 1.0
    assert hybrid.is_muon(opts[0]) and not hybrid.is_muon(opts[1])


# -- the second task's evaluator and the full tier's data, model and evaluator ----------------------
def test_classification_does_not_score_a_language_model():
    from evals.evaluators import REGISTRY, _load_builtin

    _load_builtin()
    ev = REGISTRY["classification"]
    cfg = muon_lm.Config(n_layer=1, n_head=2, n_embd=16, block_size=16)
    result = ev(muon_lm.build(cfg), cfg, ev.options())
    assert result.metrics == {} and result.protocol["scored"] is False


def test_fineweb_shards_round_trip_and_missing_data_is_named(tmp_path):
    from evals.tasks import fineweb

    assert any("fineweb_train_*.bin" in m for m in fineweb.missing(tmp_path))
    tokens = np.arange(5000) % fineweb.VOCAB_SIZE
    fineweb.write_shard(tmp_path / "fineweb_train_000001.bin", tokens)
    fineweb.write_shard(tmp_path / "fineweb_val_000000.bin", tokens[::-1])
    assert fineweb.missing(tmp_path) == []
    assert fineweb.read_shard(tmp_path / "fineweb_train_000001.bin").tolist() == tokens.tolist()
    x, y = next(fineweb.train_windows(tmp_path, 2, 8))
    assert x.tolist() == [list(range(8)), list(range(8, 16))] and (y == x + 1).all()
    (vx, vy), = list(fineweb.validation_windows(tmp_path, 16, 8, 2))
    assert vx.flatten().tolist() == tokens[::-1][:16].tolist() and vy.flatten().tolist() == tokens[::-1][1:17].tolist()
    (tmp_path / "bad_val.bin").write_bytes(b"\0" * 2048)
    with pytest.raises(ValueError, match="not a modded-nanogpt token shard"):
        fineweb.read_shard(tmp_path / "bad_val.bin")


def test_speedrun_schedule_is_the_records():
    from reproductions.muon import speedrun

    cfg = speedrun.Config()
    assert [speedrun.multiplier(s, cfg) for s in (0, 4399, 4400, 5300, 6199)] == pytest.approx(
        [1.0, 1.0, 1.0, 0.5, 1 / 1800])


def test_full_tier_builds_steps_and_is_scored_on_stand_in_shards(tmp_path):
    """The full tier's own configuration (GPT-2 124M): the missing data named, then on stand-in shards
    one optimisation step of both optimisers and the fineweb_loss evaluator on a tiny budget."""
    from evals.evaluators import REGISTRY, _load_builtin
    from evals.spec import load_spec
    from reproductions.muon import speedrun, stand_ins
    from evals.config import resolve

    cfg = resolve(load_spec("muon"), "full", "muon", 1, {}).config
    assert (cfg.n_layer, cfg.n_embd, cfg.batch_size, cfg.steps, cfg.muon_lr, cfg.scaling) == (12, 768, 512, 6200, 0.00036, "record")
    missing = speedrun.required_data(dataclasses_replace(cfg, data_root=str(tmp_path / "none")))
    assert missing and "cached_fineweb10B" in missing[0]
    cfg = stand_ins.stand_in_data(dataclasses_replace(cfg, data_root=str(tmp_path / "none")), tmp_path)
    assert speedrun.required_data(cfg) == []
    torch.manual_seed(0)
    assert 123e6 < speedrun.build(cfg).num_parameters() < 125e6  # GPT-2 small, the embedding tied to the head
    cfg = dataclasses_replace(cfg, n_layer=1)  # one block of the full width: a CPU optimiser step in seconds
    model = speedrun.build(cfg)
    out = speedrun.dry_run_step(model, cfg)
    assert math.isfinite(out["loss"]) and abs(out["loss"] - math.log(50257)) < 0.5
    _load_builtin()
    ev = REGISTRY["fineweb_loss"]
    result = ev(model, cfg, ev.options(root=cfg.data_root, tokens=512, window=256, batch_size=2))
    assert math.isfinite(result.metrics["val_loss"]) and ev.derive(result) == pytest.approx(result.metrics)


def dataclasses_replace(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, **changes)
