"""ControlNet's full tier (reproductions/controlnet/stable_diffusion.py) on a tiny Stable Diffusion the
project builds and saves in diffusers' layout (safetensors): the loading path; at initialisation the
controlled U-Net's output is the locked one's exactly; the trainable copy's residuals against
diffusers' own ControlNetModel (`from_unet`, the same copied weights and joins); training touches the
branch alone; save / load; the segmentation IoU against a hand computation; the palette."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from evals.tasks import ade20k  # noqa: E402
from evals.tasks.ade20k_stand_ins import write_ade20k  # noqa: E402
from reproductions.controlnet.stable_diffusion import (  # noqa: E402
    Config, SDControlNet, build, dry_run_step, required_data, skip_shapes, train,
)
from reproductions.controlnet.stand_ins import write_tiny_stable_diffusion  # noqa: E402


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> Config:
    root = tmp_path_factory.mktemp("controlnet-full")
    return dataclasses.replace(Config(), base_model=str(write_tiny_stable_diffusion(root / "sd")),
                               data_root=str(write_ade20k(root / "ade20k")), image_size=64)


@pytest.fixture(scope="module")
def model(cfg):
    torch.manual_seed(0)
    return build(cfg)


def inputs(model, n: int = 2):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(n, 4, 8, 8, generator=g)
    t = torch.tensor([10, 900])[:n]
    text = model.encode_prompts(["a photo of wall, sky", ""][:n])
    labels = torch.randint(0, 151, (n, 64, 64), generator=g)
    return z, t, text, ade20k.colorize(labels)


def randomise_unet_outputs(unet):
    """diffusers zero-initialises nothing in the U-Net, but make sure every block counts anyway."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_the_base_loads_from_safetensors_and_is_locked(cfg, model):
    from diffusers import UNet2DConditionModel

    folder = Path(cfg.base_model)
    assert not list(folder.rglob("*.bin")) and len(list(folder.rglob("*.safetensors"))) == 3
    assert required_data(cfg) == []
    again = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True)
    for (k, a), (_, b) in zip(model.unet.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert not any(p.requires_grad for m in (model.unet, model.vae, model.text_encoder) for p in m.parameters())
    assert model.trainable_parameters() == sum(p.numel() for p in model.control.parameters()) > 0


def test_missing_data_is_named_with_where_it_was_looked_for(tmp_path):
    missing = required_data(Config(base_model=str(tmp_path / "sd"), data_root=str(tmp_path / "ade")))
    assert any("Stable Diffusion 1.5" in m and str(tmp_path / "sd" / "unet") in m for m in missing)
    assert any(m.startswith("ADE20K images/training") and str(tmp_path / "ade" / "images" / "training") in m
               for m in missing)
    assert any(m.startswith("ADE20K annotations/validation") for m in missing)


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_at_initialisation_the_output_is_the_locked_unets_exactly(model, variant):
    z, t, text, cond = inputs(model)
    net = SDControlNet(model.unet, variant, 3, model.f)
    res, mid = net(z, t, text, cond)
    assert all(torch.count_nonzero(r) == 0 for r in res) and torch.count_nonzero(mid) == 0
    with torch.no_grad():
        locked = model.unet(z, t, encoder_hidden_states=text).sample
        joined = model.unet(z, t, encoder_hidden_states=text, down_block_additional_residuals=res,
                            mid_block_additional_residual=mid).sample
    assert torch.equal(joined, locked)
    assert torch.equal(model(z, t, text, cond), locked)  # the built model's branch (full) too


def test_the_trainable_copy_gives_diffusers_controlnet_residuals(cfg):
    """diffusers' ControlNetModel.from_unet copies the same blocks: with both condition paths at zero
    and the same (random, non-zero) 1x1 joins, the 12-per-SD residuals and the middle one agree."""
    from diffusers import ControlNetModel

    model = build(cfg)
    randomise_unet_outputs(model.unet)
    ours = SDControlNet(model.unet, "full", 3, model.f)
    ref = ControlNetModel.from_unet(model.unet, conditioning_channels=3)
    assert [tuple(c.weight.shape[:2]) for c in ref.controlnet_down_blocks] == [(c, c) for c, _ in skip_shapes(model.unet)]
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for z_ours, z_ref in [*zip(ours.out_zero, ref.controlnet_down_blocks), (ours.mid_zero, ref.controlnet_mid_block)]:
            z_ours.weight.copy_(torch.randn(z_ours.weight.shape, generator=g) * 0.1)
            z_ours.bias.copy_(torch.randn(z_ours.bias.shape, generator=g) * 0.1)
            z_ref.load_state_dict(z_ours.state_dict())
        z, t, text, cond = inputs(model)
        res, mid = ours(z, t, text, cond)        # hint_zero is zero: the copy sees z_t alone
        down_ref, mid_ref = ref(z, t, encoder_hidden_states=text, controlnet_cond=cond, return_dict=False)
    assert [r.shape for r in res] == [r.shape for r in down_ref] and mid.shape == mid_ref.shape
    for a, b in zip(res, down_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mid, mid_ref, rtol=1e-5, atol=1e-6)
    assert max(r.abs().max() for r in res) > 1e-3   # the comparison is not of zeros


def test_a_training_step_moves_the_branch_alone_and_the_zero_convs_get_gradients(cfg):
    model = build(cfg)
    base = {k: v.clone() for k, v in model.unet.state_dict().items()}
    out = dry_run_step(model, cfg)
    assert out["loss"] > 0 and out["grad_norm"] > 0
    assert all(torch.equal(v, model.unet.state_dict()[k]) for k, v in base.items())
    assert torch.count_nonzero(model.control.out_zero[0].weight) > 0      # the zero convs left zero
    assert torch.count_nonzero(model.control.mid_zero.bias) > 0
    # Section 3.1: at the first step only the output zero convolutions have a gradient (the copy, the
    # condition encoder and Z(.; Theta_z1) sit behind weights that are still zero)
    for name, p in model.control.named_parameters():
        moved = p.grad is not None and torch.count_nonzero(p.grad) > 0
        assert moved == name.startswith(("out_zero.", "mid_zero.")), name


def test_save_load_round_trip_and_sampling(cfg, tmp_path):
    model = build(cfg)
    dry_run_step(model, cfg)
    model.save(tmp_path / "final.safetensors")
    loaded = build(cfg).load(tmp_path / "final.safetensors")
    labels = ade20k.read_pair(cfg.data_root, "validation", ade20k.names(cfg.data_root, "validation")[0], 64).labels
    draw = lambda m: m.sample_from_segmentation(labels[None], ["a photo of wall"], torch.Generator().manual_seed(0), 2, 9.0)  # noqa: E731
    a, b = draw(model), draw(loaded)
    assert a.shape == (1, 3, 64, 64) and torch.equal(a, b)
    z, t, text, cond = inputs(model)
    with torch.no_grad():
        eps = model(z, t, text, cond)
        assert torch.equal(loaded(z, t, text, cond), eps)
        assert not torch.equal(build(cfg)(z, t, text, cond), eps)    # the step changed the joins


def test_train_takes_its_steps_and_draws_the_figure(cfg, tmp_path):
    from evals.contract import QuietRun, SegmentationSampler

    small = dataclasses.replace(cfg, steps=2, batch_size=2, grad_accum=2, workers=2, log_every=1)
    model = train(small, QuietRun(seed=1, folder=tmp_path))
    assert isinstance(model, SegmentationSampler) and (tmp_path / "control_samples.png").is_file()
    assert torch.count_nonzero(model.control.mid_zero.weight) > 0


def test_read_pair_resizes_crops_and_names_the_classes(cfg):
    name = ade20k.names(cfg.data_root, "training")[0]
    pair = ade20k.read_pair(cfg.data_root, "training", name, 32)
    raw = set(np.unique(np.asarray(Image.open(Path(cfg.data_root) / "annotations" / "training" / f"{name}.png"))).tolist())
    assert pair.image.shape == (3, 32, 32) and pair.labels.shape == (32, 32)
    assert set(pair.labels.unique().tolist()) <= raw          # nearest: no new label appears
    present = [ade20k.CLASSES[i - 1] for i in pair.labels.unique().tolist() if i > 0]
    assert pair.prompt.startswith("a photo of ") and all(c in present for c in pair.prompt[11:].split(", "))


def test_mean_iou_against_a_hand_computation():
    target = torch.tensor([[1, 1, 2],
                           [1, 0, 2]])
    pred = torch.tensor([[1, 2, 2],
                         [3, 3, 2]])
    # pixel (1, 1) is "other": left out. class 1: pred {(0,0)}, target {(0,0),(0,1),(1,0)}: 1/3;
    # class 2: pred {(0,1),(0,2),(1,2)}, target {(0,2),(1,2)}: 2/3; class 3: pred {(1,0)}, target {}: 0
    assert ade20k.mean_iou(pred, target) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert ade20k.mean_iou(target, target) == 1.0
    assert ade20k.mean_iou(pred, torch.zeros_like(target)) != ade20k.mean_iou(pred, torch.zeros_like(target))  # nan


def test_mean_iou_against_scikit_learn_on_random_maps():
    """sklearn's macro Jaccard over the classes present in either map, label 0 pixels dropped."""
    from sklearn.metrics import jaccard_score

    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        target, pred = torch.randint(0, 6, (2, 16, 16), generator=g)
        keep = target != 0
        t, p = target[keep].numpy(), pred[keep].numpy()
        labels = sorted(set(t.tolist()) | set(p.tolist()))
        assert ade20k.mean_iou(pred, target) == pytest.approx(
            jaccard_score(t, p, labels=labels, average="macro", zero_division=0.0))


def test_the_segmenter_matches_transformers_oneformer_processor(tmp_path):
    """The evaluator's OneFormer call (its own resize, normalisation and task tokens) against
    transformers' OneFormerProcessor pipeline on the same images: the same label maps."""
    from transformers import AutoTokenizer, OneFormerImageProcessor, OneFormerProcessor

    from evals.evaluators.segmentation_fidelity import Segmenter
    from evals.tasks.ade20k_stand_ins import write_tiny_oneformer

    folder = write_tiny_oneformer(tmp_path / "oneformer")
    seg = Segmenter(str(folder), torch.device("cpu"))
    seg.short_side = 64
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    image_processor = OneFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}, do_rescale=False, num_text=1)
    proc = OneFormerProcessor(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(folder))
    inp = proc(images=list(x), task_inputs=["semantic"] * 2, return_tensors="pt")
    assert torch.equal(inp["task_inputs"], seg.task.expand(2, -1))
    with torch.no_grad():
        out = seg.model(pixel_values=inp["pixel_values"], task_inputs=inp["task_inputs"], pixel_mask=inp["pixel_mask"])
    ref = torch.stack(image_processor.post_process_semantic_segmentation(out, target_sizes=[(64, 64)] * 2)) + 1
    assert torch.equal(seg(x), ref) and len(ref.unique()) > 1


def test_the_palette_is_one_to_one_and_starts_black():
    colours = ade20k.palette()
    assert len({tuple(c) for c in colours.tolist()}) == 151 and colours[0].tolist() == [0, 0, 0]
    assert colours[1].tolist() == [128, 0, 0] and colours[2].tolist() == [0, 128, 0]  # PASCAL VOC's first entries
    labels = torch.tensor([[0, 1], [150, 2]])
    assert ade20k.colorize(labels).shape == (3, 2, 2)


def test_segmentation_fidelity_runs_on_the_tiny_model(cfg, model, tmp_path):
    from evals.evaluators import EvaluatorSpec, resolve_evaluator

    ev, options = resolve_evaluator(EvaluatorSpec(kind="segmentation_fidelity", fid=False), "test")
    options, missing = ev.stand_in(options, tmp_path)
    result = ev(model, cfg, ev.tiny(options))
    n = len(result.samples["segmentation_iou"])
    assert n == 3 and 0 <= result.metrics["segmentation_iou"] <= 1
    assert result.metrics["segmentation_iou"] == pytest.approx(sum(result.samples["segmentation_iou"]) / n)
