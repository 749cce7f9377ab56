"""ViT: patches, the pre-LN encoder against independent implementations, the training loop's
schedule, batches and resume, a tiny learning test, and runs through the harness."""

import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from evals.config import resolve
from evals.record import load_record
from evals.run_context import Run
from evals.tier_runner import run_one
from evals.spec import load_spec
from reproductions.vit import classify, resnet_baseline, vit
from reproductions.vit.model import Attention, Block, ViT, patchify, unpatchify

TINY = dict(dataset="shapes", image_size=16, n_train=64, patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64,
            dropout=0.0, head_hidden=0, batch_size=16, steps=6, warmup_steps=2, lr=1e-3, log_every=2, workers=0)


def test_patchify_matches_slicing_and_round_trips():
    x = torch.randn(2, 3, 12, 12)
    patches = patchify(x, 4)
    assert patches.shape == (2, 9, 48)
    for r in range(3):
        for c in range(3):
            ref = x[:, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].permute(0, 2, 3, 1).reshape(2, -1)  # (P, P, C) order
            assert torch.equal(patches[:, 3 * r + c], ref)
    assert torch.equal(unpatchify(patches, 4, 3), x)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(torch.zeros(1, 3, 10, 10), 4)


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = Attention(32, 4)
    ref = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, 7, 32)
    assert torch.allclose(ours(x), ref(x, x, x, need_weights=False)[0], atol=1e-5)


def test_block_is_pre_ln_eq_2_3():
    torch.manual_seed(0)
    block = Block(16, 2, 32)
    x = torch.randn(2, 5, 16)
    z1 = block.attn(block.norm1(x)) + x                                    # (2)
    ln = nn.functional.layer_norm(z1, (16,), block.norm2.weight, block.norm2.bias, 1e-6)
    z2 = block.mlp[3](nn.functional.gelu(block.mlp[0](ln))) + z1           # (3)
    assert torch.allclose(block(x), z2, atol=1e-6)


def test_vit_equals_timm_vision_transformer_with_the_same_weights():
    """The whole forward pass (eq. 1-4 and the head) against timm's ViT, weights copied."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    ours = ViT(16, 4, 3, 5, 32, 2, 4, 64).eval()
    nn.init.normal_(ours.head.weight)  # the head starts at zero; make it count
    ref = VisionTransformer(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=32, depth=2, num_heads=4,
                            mlp_ratio=2.0, qkv_bias=True, global_pool="token").eval()
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith("patch_embed")}
    state = {k.replace("mlp.0", "mlp.fc1").replace("mlp.3", "mlp.fc2"): v for k, v in state.items()}
    state["patch_embed.proj.weight"] = ours.patch_embed.weight.view(32, 4, 4, 3).permute(0, 3, 1, 2)
    state["patch_embed.proj.bias"] = ours.patch_embed.bias
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and not missing
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x * 2 - 1), atol=1e-5)
        assert torch.allclose(ours.features(x), ref.forward_head(ref.forward_features(x * 2 - 1), pre_logits=True), atol=1e-5)


def test_vit_shapes_and_encoder_interface():
    model = ViT(16, 4, 3, 6, 32, 2, 4, 64, head_hidden=32)
    x = torch.rand(5, 3, 16, 16)
    assert model(x).shape == (5, 6)
    assert model.features(x).shape == (5, 32) and model.patch_tokens(x).shape == (5, 16, 32)
    tokens = model.embed(x)
    assert tokens.shape == (5, 16, 32) and model.encode(tokens[:, :4]).shape == (5, 5, 32)
    assert torch.equal(model.predict_logits(x), model.eval()(x))
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    mean_pooled = ViT(16, 4, 3, 6, 32, 2, 4, 64, pool="mean")
    assert torch.allclose(mean_pooled.features(x), mean_pooled.patch_tokens(x).mean(1))


def test_save_load_round_trip(tmp_path):
    cfg = vit.Config(**TINY)
    a, b = vit.build(cfg), vit.build(cfg)
    nn.init.normal_(a.head.weight)
    a.save(tmp_path / "m.safetensors")
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(b.load(tmp_path / "m.safetensors").predict_logits(x), a.predict_logits(x))


def test_learning_rate_schedule():
    lr = lambda s: classify.learning_rate(s, 1.0, 10, 110)  # noqa: E731
    assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0) and lr(60) == pytest.approx(0.5) and lr(110) == pytest.approx(0.0)
    assert classify.learning_rate(60, 1.0, 10, 110, "linear") == pytest.approx(0.5)


def test_step_batches_are_epoch_permutations_and_resumable():
    sb = classify.StepBatches(10, 4, seed=3)
    flat = torch.cat([sb.indices(s) for s in range(5)])  # 20 positions: two whole epochs
    assert sorted(flat[:10].tolist()) == list(range(10)) and sorted(flat[10:].tolist()) == list(range(10))
    assert not torch.equal(flat[:10], flat[10:])
    it = iter(classify.StepBatches(10, 4, seed=3, start_step=2))
    assert next(it) == sb.indices(2).tolist() and next(it) == sb.indices(3).tolist()


def test_random_shift_is_a_crop_of_the_edge_padded_image():
    x = torch.rand(6, 2, 7, 7)
    torch.manual_seed(1)
    out = classify.random_shift(x, 2)
    padded = nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(6):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 7, dx:dx + 7]) for dy in range(5) for dx in range(5))
    assert torch.equal(classify.random_shift(x, 0), x)


def test_weight_decay_skips_biases_norms_and_embeddings():
    model = ViT(16, 4, 3, 6, 32, 1, 4, 64)
    decay, no_decay = classify.param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"cls_token", "pos_embed", "norm.weight", "head.bias"}
    assert all(p.ndim == 2 for p in decay["params"]) and decay["weight_decay"] == 0.1


def test_tiny_vit_learns_digits(tmp_path):
    """A tiny ViT tells the handwritten 0s, 1s and 7s of the held-out split apart after 80 steps
    (chance is a third)."""
    from evals.tasks.images import load_digits

    def subset(split):
        x, y = load_digits(split)
        keep = (y == 0) | (y == 1) | (y == 7)
        return x[keep], torch.bucketize(y[keep], torch.tensor([0, 1, 7]))

    torch.manual_seed(0)
    (x, y), (x_test, y_test) = subset("train"), subset("test")
    cfg = vit.Config(**{**TINY, "dataset": "digits", "steps": 80, "warmup_steps": 8, "batch_size": 32})
    model = ViT(8, 2, 1, 3, 32, 2, 4, 64)
    run = Run(tmp_path, seed=0, device=torch.device("cpu"), progress=False, tensorboard=False)
    classify.fit(model, torch.utils.data.TensorDataset(x, y), cfg, run)
    run.close()
    acc = (model.predict_logits(x_test).argmax(-1) == y_test).float().mean().item()
    assert acc > 0.9, acc


def _resume_check(module, cfg, tmp_path):
    """`module.train(cfg)` resumed from its step-4 checkpoint ends with the uninterrupted run's weights."""
    def train_in(folder, resume=False):
        torch.manual_seed(0)
        run = Run(folder, seed=1, device=torch.device("cpu"), checkpoint_every=4, resume=resume, progress=False,
                  tensorboard=False)
        model = module.train(cfg, run)
        run.close()
        return model, run

    full, _ = train_in(tmp_path / "a")
    train_in(tmp_path / "b")
    (tmp_path / "b" / "checkpoints" / "step_000000008.safetensors").unlink()  # "interrupted" after step 4
    resumed, run = train_in(tmp_path / "b", resume=True)
    for (name, p), q in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    assert [s for s, _, _ in run.curves["loss"]] == list(range(1, 9))
    return full


def test_resumed_training_equals_uninterrupted(tmp_path):
    _resume_check(vit, vit.Config(**{**TINY, "steps": 8, "log_every": 1}), tmp_path)


def test_resnet_baseline_shapes():
    cfg = resnet_baseline.Config(dataset="digits", image_size=8, width=4, stages=2, blocks=1)
    model = resnet_baseline.build(cfg)
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert model.predict_logits(torch.rand(3, 1, 8, 8)).shape == (3, 10) and model.training


def test_full_tier_names_the_missing_imagenet_root(tmp_path):
    cfg = vit.Config(data_root=str(tmp_path / "nowhere"))
    missing = vit.required_data(cfg)
    assert len(missing) == 2 and str(tmp_path / "nowhere" / "train") in missing[0]


@pytest.mark.parametrize("arm", ["ours", "resnet"])
def test_smoke_run_through_harness_records_a_recomputable_accuracy(arm, run_opts):
    spec = load_spec("vit")
    record = load_record(run_one(resolve(spec, "smoke", arm, 1), run_opts))
    assert record.status == "ok", record.error
    ev = record.evaluations[0]
    assert ev.evaluator == "classification"
    assert ev.metrics["accuracy"] == pytest.approx(sum(ev.samples["correct"]) / len(ev.samples["correct"]))
    assert ev.protocol["split"] == "test" and ev.protocol["n"] == len(ev.samples["correct"])
    assert ev.protocol["resolution"] == record.config["image_size"]
    assert math.isfinite(record.curves["loss"][-1][2])
    assert dataclasses.asdict(resolve(spec, "smoke", arm, 1).config) == record.config


def test_full_tier_dry_run_names_the_missing_root(tmp_path, capsys):
    from evals.cli import main

    small = [f"{k}={v}" for k, v in {"depth": 1, "dim": 32, "heads": 2, "mlp_dim": 64, "head_hidden": 32, "workers": 0}.items()]
    args = ["reproduce", "vit", "--tier", "full", "--dry-run", "--set", f"data_root={tmp_path}/imagenet"]
    assert main([*args, *[a for kv in small for a in ("--set", kv)]]) == 3  # code fine, data missing: ran on a stand-in
    err = capsys.readouterr().err
    assert f"{tmp_path}/imagenet/train" in err and f"{tmp_path}/imagenet/val" in err


# --- the mini tier's augmentation (augment.py): the same for the ViT and the ResNet arms ---

from evals.tasks.images import SHAPES, _shape_masks, make_shapes  # noqa: E402
from reproductions.vit import augment, vit_augmented  # noqa: E402


def test_every_shape_class_is_mirror_symmetric_but_the_triangle_is_not_upside_down_symmetric():
    """The horizontal flip keeps each class (and the image's distribution); a vertical one would not."""
    g = torch.linspace(-1.5, 1.5, 61)
    dx, dy = g[None, None, :].expand(1, 61, 61), g[None, :, None].expand(1, 61, 61)
    for kind in SHAPES:
        assert torch.equal(_shape_masks(kind, -dx, dy), _shape_masks(kind, dx, dy)), kind
    assert not torch.equal(_shape_masks("triangle", dx, -dy), _shape_masks("triangle", dx, dy))


def _shifted(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """A non-circular shift of the last two dims (zeros come in)."""
    out = torch.zeros_like(t)
    h, w = t.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = t[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_augmented_shapes_are_the_shapes_flipped_and_moved_whole_inside_the_image():
    b = make_shapes(64, 24, seed=5)
    ds = augment.AugmentedShapes(b.images, b.labels, b.masks, 3, True, seed=7)
    items = ds.__getitems__(list(range(64)))
    x, y = torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])
    assert torch.equal(y, b.labels)  # labels unchanged
    flips = moves = 0
    for i in range(64):
        found = []
        for f in (False, True):
            img, mask = (b.images[i].flip(-1), b.masks[i].flip(-1)) if f else (b.images[i], b.masks[i])
            for dy in range(-3, 4):
                for dx in range(-3, 4):
                    # the shape moved whole: its mask shifted without wrapping keeps every pixel
                    whole = _shifted(mask, dy, dx).sum() == mask.sum()
                    if whole and torch.equal(x[i], torch.roll(img, (dy, dx), (-2, -1))):
                        found.append((f, dy, dx))
        assert found, f"image {i} is not a flipped and moved copy keeping its shape inside"
        flips += found[0][0]
        moves += found[0][1:] != (0, 0)
    assert 10 < flips < 54 and moves > 40  # both transforms are used


def test_augmentation_is_a_function_of_seed_and_step_and_varies_across_steps():
    b = make_shapes(32, 16, seed=2)
    idx = list(range(32))
    make = lambda seed, start=0: augment.AugmentedShapes(b.images, b.labels, b.masks, 2, True, seed, start)  # noqa: E731
    batch = lambda ds: torch.stack([i[0] for i in ds.__getitems__(idx)])  # noqa: E731
    a = make(1)
    first, second = batch(a), batch(a)
    assert torch.equal(first, batch(make(1)))         # same seed, same step: the same images
    assert not torch.equal(first, second)             # the next step draws anew
    assert torch.equal(second, batch(make(1, 1)))     # a run resumed at step 1 sees step 1's images
    assert not torch.equal(first, batch(make(2)))     # another seed, other images
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    batch(make(1))
    assert torch.equal(torch.rand(1), before)         # torch's global generator is left alone


class _Run:
    def __init__(self, seed, state=None):
        self.seed, self._state = seed, state

    def resume_state(self):
        return self._state


def test_vit_and_resnet_arms_see_the_same_augmented_batches():
    common = dict(dataset="shapes", image_size=16, n_train=40, batch_size=8, shift=2, flip=True)
    dv = augment.training_set(vit_augmented.Config(**common), _Run(3))
    dr = augment.training_set(resnet_baseline.Config(**common), _Run(3))
    for step in range(3):
        idx = classify.StepBatches(40, 8, 3).indices(step).tolist()
        assert all(torch.equal(p[0], q[0]) and p[1] == q[1] for p, q in zip(dv.__getitems__(idx), dr.__getitems__(idx)))
    resumed = augment.training_set(vit_augmented.Config(**common), _Run(3, {"phase": "", "parts": {"counters": {"step": 2}}}))
    assert resumed.step == 2
    plain = augment.training_set(vit_augmented.Config(**{**common, "shift": 0, "flip": False}), _Run(3))
    assert isinstance(plain, torch.utils.data.TensorDataset)  # no augmentation: the plain set, as before
    with pytest.raises(ValueError, match="shapes only"):
        augment.training_set(vit_augmented.Config(dataset="digits", image_size=8, shift=1), _Run(3))


def test_augmented_resumed_training_equals_uninterrupted(tmp_path):
    cfg = vit_augmented.Config(**{**TINY, "steps": 8, "log_every": 1, "shift": 2, "flip": True})
    full = _resume_check(vit_augmented, cfg, tmp_path)
    plain = vit.Config(**TINY | {"steps": 8, "log_every": 1})
    torch.manual_seed(0)
    other = vit.train(plain, Run(tmp_path / "c", seed=1, device=torch.device("cpu"), progress=False, tensorboard=False))
    assert not torch.equal(other.head.weight, full.head.weight)  # the augmentation changed the training
