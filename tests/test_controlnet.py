"""ControlNet's control branch on the LDM U-Net: at initialisation the output is the locked model's
exactly; the residuals reach the skip connections as a hand-written U-Net forward adds them; the
zero convolutions still get gradients; the base stays locked; the ablation variants; Canny edges."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.contract import QuietRun
from reproductions.controlnet.control import ControlNet, canny_edges, skip_shapes
from reproductions.ddpm.unet import UNet, timestep_embedding
from reproductions.ldm.ldm import ClassConditionalUNet


def base_unet(seed: int = 0) -> ClassConditionalUNet:
    torch.manual_seed(seed)
    net = ClassConditionalUNet(UNet(4, 8, 8, (1, 2), 1, (4,), 0.0, 4), num_classes=6)
    for p in net.parameters():  # DDPM zero-initialises its output convolutions: make every path count
        nn.init.normal_(p, std=0.2)
    return net


def inputs(n: int = 2):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, 4, 8, 8, generator=g), torch.tensor([5, 700])[:n], torch.tensor([1, 6])[:n],
            torch.rand(n, 1, 32, 32, generator=g))


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_at_initialisation_the_output_is_the_locked_models_exactly(variant):
    base = base_unet()
    x, t, y, c = inputs()
    with torch.no_grad():
        before = base(x, t, y)
        net = ControlNet(base, 1, 4, variant)
        assert torch.equal(net(x, t, y, c), before)
        assert torch.equal(base(x, t, y), before)  # without a control call, the hooks add nothing


def test_without_zero_convolutions_the_output_changes_at_initialisation():
    base = base_unet()
    x, t, y, c = inputs()
    with torch.no_grad():
        before = base(x, t, y)
        assert not torch.allclose(ControlNet(base, 1, 4, "no_zero")(x, t, y, c), before)


def reference_forward(base: ClassConditionalUNet, x, t, y, residuals, mid_residual):
    """DDPM's U-Net forward written out by hand, with ControlNet's residuals added to each skip
    connection as the decoder consumes it and to the middle block's output."""
    u = base.unet
    temb = u.temb.temb(timestep_embedding(t, u.ch)) + base.label_emb(y)
    hs = [u.conv_in(x)]
    h = hs[-1]
    for level, down in zip(u.down, u.downsample):
        for res, attn in zip(level.res, level.attn):
            h = attn(res(h, temb))
            hs.append(h)
        if not isinstance(down, nn.Identity):
            h = down(h)
            hs.append(h)
    h = u.mid2(u.mid_attn(u.mid1(h, temb)), temb) + mid_residual
    hs = [a + r for a, r in zip(hs, residuals)]
    for level, up in zip(u.up, u.upsample):
        for res, attn in zip(level.res, level.attn):
            h = attn(res(torch.cat([h, hs.pop()], dim=1), temb))
        if not isinstance(up, nn.Identity):
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return u.conv_out(F.silu(u.norm_out(h)))


def test_residuals_reach_the_skip_connections_as_a_hand_written_forward_adds_them():
    base = base_unet()
    net = ControlNet(base, 1, 4, "full")
    for z in [*net.out_zero, net.mid_zero, net.hint_zero]:  # as if trained: non-zero joins
        nn.init.normal_(z.weight, std=0.3)
    x, t, y, c = inputs()
    with torch.no_grad():
        residuals, mid = net.control(x, t, y, c)
        assert [r.shape[1] for r in residuals] == [ch for ch, _ in skip_shapes(base.unet)]
        torch.testing.assert_close(net(x, t, y, c), reference_forward(base, x, t, y, residuals, mid))


def test_zero_convolutions_get_gradients_and_the_base_stays_locked():
    base = base_unet()
    net = ControlNet(base, 1, 4, "full")
    x, t, y, c = inputs()
    net(x, t, y, c).pow(2).mean().backward()
    assert all(p.grad is None for p in base.parameters())
    assert net.out_zero[0].weight.grad.abs().sum() > 0 and net.mid_zero.weight.grad.abs().sum() > 0
    # the paper's argument: dZ/dW != 0 at W = 0 since the input is not zero; the copy itself gets none yet
    assert net.hint_zero.weight.grad is not None
    assert net.trainable_parameters() < sum(p.numel() for p in base.parameters()) + sum(p.numel() for p in net.hint.parameters()) + 10_000


def test_canny_edges_of_a_square():
    img = torch.zeros(1, 3, 32, 32)
    img[:, :, 8:24, 8:24] = 1.0
    edges = canny_edges(img)
    assert edges.shape == (1, 1, 32, 32) and set(edges.unique().tolist()) <= {0.0, 1.0}
    assert edges[0, 0, 8:24, 7:9].sum() > 10 and edges[0, 0, 14:18, 14:18].sum() == 0


def test_edge_f1_against_a_pixel_loop():
    from evals.tasks.edges import edge_f1

    g = torch.Generator().manual_seed(0)
    p = (torch.rand(3, 1, 9, 9, generator=g) < 0.2).float()
    r = (torch.rand(3, 1, 9, 9, generator=g) < 0.2).float()

    def near(a, i, j):
        return any(a[y, x] for y in range(max(0, i - 1), min(9, i + 2)) for x in range(max(0, j - 1), min(9, j + 2)))

    for k in range(3):
        a, b = p[k, 0], r[k, 0]
        pts_a = [(i, j) for i in range(9) for j in range(9) if a[i, j]]
        pts_b = [(i, j) for i in range(9) for j in range(9) if b[i, j]]
        prec = sum(near(b, i, j) for i, j in pts_a) / len(pts_a)
        rec = sum(near(a, i, j) for i, j in pts_b) / len(pts_b)
        assert edge_f1(p, r)[k].item() == pytest.approx(2 * prec * rec / (prec + rec))
    assert edge_f1(r, r).tolist() == [1.0, 1.0, 1.0]
    assert edge_f1(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)).item() == 1.0


def test_train_save_load_and_the_evaluator(tmp_path):
    import dataclasses

    from evals.config import resolve
    from evals.contract import ConditionedSampler, QuietRun
    from evals.evaluators import EvaluatorSpec, resolve_evaluator
    from evals.spec import load_spec
    from reproductions.controlnet import controlnet as cn

    cfg = resolve(load_spec("controlnet"), "smoke", "full", 1).config
    model = cn.train(cfg, QuietRun(folder=tmp_path))
    assert isinstance(model, ConditionedSampler) and (tmp_path / "control_samples.png").exists()
    model.save(tmp_path / "m.safetensors")
    back = cn.build(cfg).load(tmp_path / "m.safetensors")
    c, y, _ = back.held_out_conditions(2)
    torch.testing.assert_close(back.sample_conditioned(c, y, torch.Generator().manual_seed(0), 2, True),
                               model.sample_conditioned(c, y, torch.Generator().manual_seed(0), 2, True))
    # at initialisation (no control steps) the controlled sampler is the base sampler exactly
    fresh = cn.ControlledLDM(dataclasses.replace(cfg, variant="full"), model.ldm)
    torch.testing.assert_close(fresh.sample_conditioned(c, y, torch.Generator().manual_seed(0), 2, True),
                               fresh.sample_conditioned(c, y, torch.Generator().manual_seed(0), 2, False), rtol=0, atol=0)
    ev, opts = resolve_evaluator(EvaluatorSpec(kind="condition_fidelity", num_samples=6, batch_size=6, ddim_steps=2,
                                               reference_limit=100), "test")
    res = ev(model, cfg, opts)
    assert res.metrics["edge_f1_real"] > 0.9  # the conditions are the real images' own edges
    import statistics

    for key in ("edge_f1", "edge_f1_base", "edge_f1_real"):  # exactly, as repro verify checks
        assert res.metrics[key] == statistics.fmean(res.samples[key]), key


class _Curve(QuietRun):
    """A quiet run that keeps what is logged."""

    def __init__(self, folder):
        super().__init__(folder=folder)
        self.logged = []

    def log(self, step, **values):
        self.logged.append((step, values))


def test_trained_once_leaves_the_callers_random_state_and_replays_the_curve():
    from reproductions.common import trained_once as once

    calls = []

    def train(log):
        calls.append(1)
        log(1, loss=float(torch.rand(())))
        return {"w": torch.randn(3)}

    key = ("test", object())  # a key no other test shares
    torch.manual_seed(0)
    expected_next = torch.rand(2)
    torch.manual_seed(0)
    first, second = [], []
    a = once.trained_once(key, 7, torch.device("cpu"), train, lambda s, **v: first.append((s, v)))
    assert torch.equal(torch.rand(2), expected_next)  # the caller's stream is untouched
    b = once.trained_once(key, 7, torch.device("cpu"), train, lambda s, **v: second.append((s, v)))
    assert calls == [1] and torch.equal(a["w"], b["w"]) and first == second and len(first) == 1
    with torch.random.fork_rng():
        torch.manual_seed(7)  # trained in a state seeded by the seed alone
        assert first[0][1]["loss"] == float(torch.rand(()))
    b["w"].zero_()  # a caller's copy is its own
    assert not torch.equal(once.trained_once(key, 7, torch.device("cpu"), train, lambda s, **v: None)["w"], b["w"])


def test_an_arm_after_another_of_its_seed_equals_the_arm_alone(tmp_path, monkeypatch):
    """The base is shared through the cache: `lite` run after `full` in one process gives the bits
    and the curve that `lite` gives alone (as `repro verify` re-executes it)."""
    import dataclasses

    from evals.config import resolve
    from evals.spec import load_spec
    from reproductions.common import trained_once as once
    from reproductions.controlnet import controlnet as cn

    cfg = resolve(load_spec("controlnet"), "smoke", "lite", 1).config
    trainings = []
    real_train = cn.ldm.train
    monkeypatch.setattr(cn.ldm, "train", lambda *a: trainings.append(1) or real_train(*a))
    once._CACHE.clear()
    torch.manual_seed(1)
    alone_run = _Curve(tmp_path / "alone")
    (tmp_path / "alone").mkdir()
    alone = cn.train(cfg, alone_run).state_dict()
    once._CACHE.clear()
    torch.manual_seed(1)
    (tmp_path / "full").mkdir()
    cn.train(dataclasses.replace(cfg, variant="full"), _Curve(tmp_path / "full"))
    torch.manual_seed(1)
    after_run = _Curve(tmp_path / "after")
    (tmp_path / "after").mkdir()
    after = cn.train(cfg, after_run).state_dict()
    assert len(trainings) == 2  # alone, then full; lite after full took full's base
    assert after_run.logged == alone_run.logged and alone_run.logged
    assert alone.keys() == after.keys()
    for k in alone:
        assert torch.equal(alone[k], after[k]), k
    once._CACHE.clear()
