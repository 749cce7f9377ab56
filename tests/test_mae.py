"""MAE: masking, the decoder's un-shuffle, the loss on removed patches only, position embeddings,
layer-wise decay, the linear probe, and runs through the harness."""

import math

import pytest
import torch

from evals.config import resolve
from evals.record import load_record
from evals.tier_runner import run_one
from evals.spec import load_spec
from reproductions.mae import mae
from reproductions.vit.model import patchify

TINY = dict(dataset="shapes", image_size=16, patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64, decoder_dim=16,
            decoder_depth=1, decoder_heads=2, n_train=32, n_unlabeled=64, steps=2, batch_size=8, warmup_steps=1,
            pretrain_steps=2, pretrain_batch_size=8, pretrain_warmup_steps=1, probe_steps=5, log_every=1, workers=0,
            reconstructions=2)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.9])
def test_masking_keeps_the_right_count_per_sample(ratio):
    x = torch.randn(5, 16, 8)
    kept, mask, ids_restore = mae.random_masking(x, ratio)
    n_keep = int(16 * (1 - ratio))
    assert kept.shape == (5, n_keep, 8)
    assert (mask.sum(1) == 16 - n_keep).all() and set(mask.unique().tolist()) <= {0.0, 1.0}
    # every kept token is the input token at a position the mask calls visible
    for i in range(5):
        visible = x[i, mask[i] == 0]
        assert sorted(map(tuple, kept[i].tolist())) == sorted(map(tuple, visible.tolist()))
    assert not all(torch.equal(mask[0], mask[i]) for i in range(1, 5))  # a shuffle per sample


def test_unshuffle_restores_the_original_order():
    """Kept tokens followed by placeholders, gathered by ids_restore, give back each visible token
    at its own position and a placeholder at every removed one (what the decoder does)."""
    n, length = 3, 12
    x = torch.arange(n * length, dtype=torch.float32).view(n, length, 1) + 1
    noise = torch.rand(n, length)
    kept, mask, ids_restore = mae.random_masking(x, 0.75, noise)
    full = torch.cat([kept, torch.zeros(n, length - kept.shape[1], 1)], dim=1)
    restored = full.gather(1, ids_restore.unsqueeze(-1))
    assert torch.equal(restored[..., 0], x[..., 0] * (1 - mask))
    # the lowest-noise quarter is what is kept
    assert torch.equal(mask == 0, noise <= noise.sort(1).values[:, 2:3])


def test_loss_counts_removed_patches_only():
    torch.manual_seed(0)
    pred, target = torch.randn(4, 9, 6, requires_grad=True), torch.randn(4, 9, 6)
    mask = (torch.rand(4, 9) < 0.7).float()
    loss = mae.masked_mse(pred, target, mask)
    total, count = 0.0, 0
    for i in range(4):
        for j in range(9):
            if mask[i, j]:
                total += sum((pred[i, j, k].item() - target[i, j, k].item()) ** 2 for k in range(6)) / 6
                count += 1
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    loss.backward()
    assert (pred.grad[mask == 0] == 0).all() and (pred.grad[mask == 1] != 0).any()


def test_model_loss_ignores_visible_patch_predictions():
    """Changing the decoder's output on visible patches does not change the loss."""
    torch.manual_seed(0)
    model = mae.build(mae.Config(**TINY))
    x = torch.rand(2, 3, 16, 16)
    noise = torch.rand(2, 16)
    loss, pred, mask = model.pretrain_loss(x, noise)
    target = mae.reconstruction_target(x, 4, True)
    assert loss.item() == pytest.approx(mae.masked_mse(pred, target, mask).item())
    assert loss.item() == pytest.approx(mae.masked_mse(pred + 5.0 * (1 - mask).unsqueeze(-1), target, mask).item())
    assert pred.shape == (2, 16, 48) and mask.sum().item() == 2 * 12


def test_norm_pix_target_is_per_patch_standardised():
    x = torch.rand(2, 3, 8, 8)
    t = mae.reconstruction_target(x, 4, norm_pix=True)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 4), atol=1e-5)
    assert torch.allclose(t.var(-1), torch.ones(2, 4), atol=1e-3)
    assert torch.equal(mae.reconstruction_target(x, 4, norm_pix=False), patchify(x * 2 - 1, 4))


def test_sincos_position_embedding():
    emb = mae.sincos_pos_embed(8, 3)
    assert emb.shape == (1, 10, 8) and (emb[0, 0] == 0).all()
    row, col = 1, 2  # the token of patch (1, 2)
    omega = [1.0, 1.0 / 100.0]  # 10000^(-i / (d/4)), d/4 = 2
    expected = [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega] + \
               [math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
    assert torch.allclose(emb[0, 1 + 3 * row + col], torch.tensor(expected), atol=1e-6)


def test_layer_decay_groups_scale_by_depth():
    model = mae.build(mae.Config(**TINY))
    groups = mae.layer_decay_groups(model.encoder, 0.05, 0.5)
    scales = {}
    for g in groups:
        for p in g["params"]:
            scales[id(p)] = g["lr_scale"]
    enc = model.encoder
    assert scales[id(enc.patch_embed.weight)] == 0.5 ** 3 and scales[id(enc.blocks[0].attn.qkv.weight)] == 0.5 ** 2
    assert scales[id(enc.blocks[1].mlp[0].weight)] == 0.5 and scales[id(enc.head.weight)] == 1.0
    assert sum(len(g["params"]) for g in groups) == len(list(enc.parameters()))


def test_reconstruction_pastes_visible_patches(tmp_path):
    torch.manual_seed(0)
    model = mae.build(mae.Config(**TINY, norm_pix_loss=False))
    x = torch.rand(2, 3, 16, 16)
    noise = torch.rand(2, 16)
    masked, recon = model.reconstruct(x, noise)
    _, mask, _ = mae.random_masking(torch.zeros(2, 16, 1), 0.75, noise)
    visible = (mask == 0).unsqueeze(-1).expand(-1, -1, 48)
    assert torch.allclose(patchify(recon, 4)[visible], patchify(x, 4)[visible], atol=1e-6)
    assert torch.allclose(patchify(masked, 4)[~visible], torch.full_like(patchify(masked, 4)[~visible], 0.5))


def test_linear_probe_reads_a_frozen_copy_of_the_encoder(tmp_path):
    from evals.run_context import Run

    cfg = mae.Config(**{**TINY, "probe_steps": 20})
    torch.manual_seed(0)
    model = mae.build(cfg)
    labeled = mae.image_dataset("shapes", "train", 16, None, 32)
    run = Run(tmp_path, seed=1, device=torch.device("cpu"), progress=False, tensorboard=False)
    mae.linear_probe(model, labeled, cfg, run, step_offset=0)
    run.close()
    probed = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    assert all(torch.equal(probed[k], v) for k, v in model.probe_encoder.state_dict().items())
    feats, _ = mae.encoder_features(model.probe_encoder, labeled)
    z = model.probe_norm.eval()(feats)  # BatchNorm at the features' own statistics: standardised
    assert torch.allclose(z.mean(0), torch.zeros(32), atol=1e-4) and torch.allclose(z.var(0), torch.ones(32), atol=5e-3)
    assert run.curves["probe_loss"][-1][2] < run.curves["probe_loss"][0][2]
    images = labeled.tensors[0]
    before = model.probe_logits(images)
    with torch.no_grad():  # fine-tuning moves the encoder, not the probe's copy
        for p in model.encoder.parameters():
            p.add_(0.1)
    assert torch.equal(model.probe_logits(images), before)
    assert torch.equal(before, model.probe(z))


@pytest.mark.parametrize("arm", ["ours", "scratch"])
def test_smoke_run_through_harness(arm, run_opts):
    record = load_record(run_one(resolve(load_spec("mae"), "smoke", arm, 1), run_opts))
    assert record.status == "ok", record.error
    finetuned, probe = record.evaluations
    assert finetuned.protocol["prediction"].startswith("arg-max of predict_logits")
    assert probe.protocol["prediction"].startswith("arg-max of probe_logits")
    for ev, pre in ((finetuned, ""), (probe, "linear_")):
        acc = ev.metrics[f"{pre}accuracy"]
        assert acc == pytest.approx(sum(ev.samples[f"{pre}correct"]) / len(ev.samples[f"{pre}correct"]))
    run_dir = run_opts.runs / "mae" / "smoke" / record.run_id
    assert (run_dir / "reconstructions.png").is_file() == (record.config["pretrain_steps"] > 0)
    assert ("pretrain_loss" in record.curves) == (record.config["pretrain_steps"] > 0)
    assert "probe_loss" in record.curves and "finetune_loss" in record.curves


@pytest.mark.parametrize("ratio, kept", [(0.25, 48), (0.5, 32), (0.75, 16), (0.9, 6)])
def test_masking_of_64_patches_keeps_the_paper_count(ratio, kept):
    """The mini tier's 64 patches (32x32 images, 4x4 patches): exactly int((1 - r) * 64) visible."""
    _, mask, _ = mae.random_masking(torch.randn(7, 64, 3), ratio)
    assert ((mask == 0).sum(1) == kept).all()


def test_pretrain_loss_matches_a_naive_loop():
    """The model's loss from its own prediction, recomputed by loops over images and patches:
    each removed patch's pixels (in [-1, 1]) standardised by that patch's own mean and unbiased
    variance, squared error averaged over pixels, then over the removed patches only."""
    torch.manual_seed(0)
    model = mae.build(mae.Config(**TINY))
    x = torch.rand(2, 3, 16, 16)
    loss, pred, mask = model.pretrain_loss(x, torch.rand(2, 16))
    total, count = 0.0, 0
    for n in range(2):
        for i in range(4):
            for j in range(4):
                k = 4 * i + j
                if mask[n, k] == 0:
                    continue
                patch = (x[n, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4] * 2 - 1).permute(1, 2, 0).reshape(-1).tolist()
                m = sum(patch) / len(patch)
                v = sum((p - m) ** 2 for p in patch) / (len(patch) - 1)
                target = [(p - m) / math.sqrt(v + 1e-6) for p in patch]
                total += sum((a - b) ** 2 for a, b in zip(pred[n, k].tolist(), target)) / len(target)
                count += 1
    assert count == 2 * 12 and loss.item() == pytest.approx(total / count, rel=1e-5)


def test_global_pool_reads_unnormalised_tokens_through_a_new_norm():
    """Fine-tuning's features (the authors' global_pool): the mean of the patch tokens before the
    encoder's final LayerNorm, through `fc_norm`; the final norm (pre-training's) plays no part."""
    torch.manual_seed(0)
    enc = mae.build(mae.Config(**TINY)).encoder
    with torch.no_grad():
        enc.norm.weight.mul_(3.0)
        enc.fc_norm.weight.uniform_(0.5, 1.5)
        enc.fc_norm.bias.uniform_(-0.5, 0.5)
    x = torch.rand(3, 3, 16, 16)
    z = torch.cat([(enc.cls_token + enc.pos_embed[:, :1]).expand(3, -1, -1), enc.embed(x)], dim=1)
    for block in enc.blocks:
        z = block(z)
    pooled = z[:, 1:].mean(1)
    expected = (pooled - pooled.mean(-1, keepdim=True)) / (pooled.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    expected = expected * enc.fc_norm.weight + enc.fc_norm.bias
    assert torch.allclose(enc.features(x), expected, atol=1e-5)
    assert not torch.allclose(enc.features(x), enc.forward_features(x)[:, 1:].mean(1), atol=1e-3)
    off = mae.build(mae.Config(**TINY, global_pool=False)).encoder
    assert not hasattr(off, "fc_norm")
    assert torch.allclose(off.features(x), off.forward_features(x)[:, 1:].mean(1))
