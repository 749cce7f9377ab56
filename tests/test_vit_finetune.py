"""ViT's fine-tuning at a higher resolution (Section 3.2): the position-embedding interpolation
against scipy's order-1 zoom (the reference code's), its exactness on linear embeddings, the new
head, and the two phases end to end on a tiny model."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from evals.contract import QuietRun
from reproductions.vit import finetune


def test_interpolation_matches_scipy_order_1_zoom():
    g = torch.Generator().manual_seed(0)
    old, new, dim = 4, 7, 3
    pos = torch.randn(1, 1 + old * old, dim, generator=g, dtype=torch.float64)
    out = finetune.interpolate_positions(pos, old, new)
    assert out.shape == (1, 1 + new * new, dim)
    assert torch.equal(out[:, 0], pos[:, 0])  # the class token's embedding is kept
    grid = pos[0, 1:].reshape(old, old, dim).numpy()
    want = ndimage.zoom(grid, (new / old, new / old, 1), order=1)
    np.testing.assert_allclose(out[0, 1:].reshape(new, new, dim).numpy(), want, atol=1e-12)


def test_interpolation_is_exact_on_an_embedding_linear_in_the_patch_position():
    old, new = 5, 9
    r, c = torch.meshgrid(torch.linspace(0, 1, old, dtype=torch.float64), torch.linspace(0, 1, old, dtype=torch.float64), indexing="ij")
    pos = torch.cat([torch.zeros(1, 2, dtype=torch.float64), torch.stack([3 * r - 2 * c, r + c + 1], -1).reshape(-1, 2)])[None]
    out = finetune.interpolate_positions(pos, old, new)[0, 1:].reshape(new, new, 2)
    r2, c2 = torch.meshgrid(torch.linspace(0, 1, new, dtype=torch.float64), torch.linspace(0, 1, new, dtype=torch.float64), indexing="ij")
    torch.testing.assert_close(out, torch.stack([3 * r2 - 2 * c2, r2 + c2 + 1], -1), atol=1e-12, rtol=0)
    same = finetune.interpolate_positions(pos, old, old)
    torch.testing.assert_close(same, pos, atol=1e-15, rtol=0)


def tiny(**kw) -> finetune.Config:
    base = dict(dataset="shapes", pretrain_image_size=16, image_size=24, n_train=64, steps=3, batch_size=8, lr=1e-3,
                warmup_steps=1, log_every=1, workers=0, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32,
                dropout=0.0, head_hidden=8, finetune_steps=2, finetune_batch_size=8, finetune_lr=0.01,
                finetune_warmup_steps=1)
    return finetune.Config(**(base | kw))


def test_prepared_model_has_the_new_grid_and_a_zero_linear_head():
    cfg = tiny()
    model = finetune.build(cfg)
    assert model.image_size == 24 and model.num_patches == 36 and model.pos_embed.shape == (1, 37, 16)
    assert isinstance(model.head, torch.nn.Linear) and not model.head.weight.any() and not model.head.bias.any()
    logits = model(torch.rand(2, 3, 24, 24))
    assert logits.shape == (2, finetune.num_classes(cfg)) and not logits.any()  # a zero head predicts nothing at first
    with pytest.raises(ValueError, match="multiple of patch_size"):
        finetune.build(tiny(image_size=26))


class Recorder(QuietRun):
    def __init__(self):
        super().__init__(seed=1)
        self.logged: list[tuple[int, dict]] = []

    def log(self, step, **values):
        self.logged.append((step, values))


def test_train_pretrains_then_finetunes_at_the_higher_resolution():
    cfg, run = tiny(), Recorder()
    model = finetune.train(cfg, run)
    steps = [s for s, v in run.logged if "loss" in v]
    ft_steps = [s for s, v in run.logged if "finetune_loss" in v]
    assert steps == [1, 2, 3] and ft_steps == [4, 5]  # the fine-tuning phase counts on from pre-training
    assert model.head.weight.any()  # the new head was trained
    assert model.predict_logits(torch.rand(2, 3, 24, 24)).shape == (2, finetune.num_classes(cfg))
    out = finetune.dry_run_step(finetune.build(cfg), cfg)
    assert set(out) == {"pretrain_loss", "finetune_loss"} and all(np.isfinite(list(out.values())))
