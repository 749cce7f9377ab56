"""SAM 2 (arXiv 2408.00714): the J&F measures against the DAVIS code (vos-benchmark's copy of
davis2017-evaluation) and against a per-pixel computation written out, on hand-made and random
masks; the moving-shapes generator; the memory bank's selection against a list-based rule; the
attention against torch's MultiheadAttention; streaming (no frame sees a later one); the memory
carries the prompt forward; the evaluator end to end on an oracle; a tiny training run."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from evals.contract import QuietRun, VideoSegmenter
from evals.evaluators.j_and_f import JandFOptions, boundary_f, jaccard, j_and_f, seg2bmap
from evals.tasks.moving_shapes import (OCCLUDED, corrective_click, first_click, interior_point, make_videos,
                                       post_occlusion)
from reproductions.sam2.model import PAD, Attention, memory_bank
from reproductions.sam2.sam2 import Config, build, points_tensor, train, training_prompts

TINY = dict(image_size=32, frames=4, patch_size=8, vit_dim=16, vit_depth=1, vit_heads=2, dim=16, decoder_depth=1,
            decoder_heads=2, decoder_mlp=32, mem_dim=8, memory_layers=1, memory_heads=1, memory_mlp=32, num_recent=2,
            max_pointers=4, batch_size=2, steps=2, lr=1e-3, warmup_steps=1, grad_clip=1.0, log_every=1, overlays=0)


def square(r0, c0, side, size=32):
    m = np.zeros((size, size), bool)
    m[r0:r0 + side, c0:c0 + side] = True
    return m


# -- the measures ------------------------------------------------------------------------------------
def naive_boundary(mask):
    """seg2bmap pixel by pixel: a pixel is on the boundary when it differs from its east, south or
    south-east neighbour; on the last row only east counts, on the last column only south, and the
    bottom-right pixel never (neighbours outside the image count as background)."""
    h, w = mask.shape
    get = lambda r, c: bool(mask[r, c]) if r < h and c < w else False  # noqa: E731
    b = np.zeros_like(mask, dtype=bool)
    for r in range(h):
        for c in range(w):
            if r == h - 1 and c == w - 1:
                continue
            if r == h - 1:
                b[r, c] = get(r, c) != get(r, c + 1)
            elif c == w - 1:
                b[r, c] = get(r, c) != get(r + 1, c)
            else:
                b[r, c] = any(get(r, c) != get(r + dr, c + dc) for dr, dc in ((0, 1), (1, 0), (1, 1)))
    return b


def naive_f(pred, gt, radius):
    """Boundary F by distances: a boundary pixel matches when a pixel of the other boundary lies
    within Euclidean distance `radius`; DAVIS's conventions for empty boundaries."""
    pb, gb = np.argwhere(naive_boundary(pred)), np.argwhere(naive_boundary(gt))
    if len(pb) == 0 and len(gb) == 0:
        return 1.0
    if len(pb) == 0 or len(gb) == 0:
        return 0.0
    d = np.sqrt(((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1))
    precision, recall = (d.min(1) <= radius).mean(), (d.min(0) <= radius).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_j_and_f_on_hand_made_masks():
    a = square(10, 10, 4)
    assert jaccard(a, a) == 1.0 and boundary_f(a, a) == 1.0
    empty = np.zeros((32, 32), bool)
    assert jaccard(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0   # DAVIS: both empty is perfect
    assert jaccard(empty, a) == 0.0 and boundary_f(empty, a) == 0.0           # P = 1, R = 0
    assert jaccard(a, empty) == 0.0 and boundary_f(a, empty) == 0.0           # P = 0, R = 1
    shifted = square(10, 11, 4)                                                # one pixel right
    assert jaccard(a, shifted) == pytest.approx(12 / 20)
    assert boundary_f(a, shifted) == 1.0   # within the 1-pixel tolerance at 32x32: ceil(0.008 * 45.25) = 1
    far = square(20, 20, 4)
    assert jaccard(a, far) == 0.0 and boundary_f(a, far) == 0.0
    # a 4x4 square's seg2bmap: its own top-left 3x3 edge ring, shifted half a pixel to the origin
    b = seg2bmap(a)
    assert b.sum() == naive_boundary(a).sum() == 16
    assert b[9, 9] and b[13, 13] and not b[11, 11]


def test_boundary_matches_the_per_pixel_computation_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pred = rng.random((12, 14)) < rng.uniform(0.1, 0.7)
        gt = rng.random((12, 14)) < rng.uniform(0.1, 0.7)
        assert np.array_equal(seg2bmap(pred), naive_boundary(pred))
        for th, radius in ((0.008, 1), (2, 2), (0.1, math.ceil(0.1 * math.hypot(12, 14)))):
            assert boundary_f(pred, gt, th) == pytest.approx(naive_f(pred, gt, radius), abs=1e-12)


def test_j_and_f_match_the_davis_code():
    vb = pytest.importorskip("vos_benchmark.evaluator")
    videos = make_videos(3, "test")
    rng = np.random.default_rng(1)
    for gt in videos.masks.numpy():
        pred = np.stack([np.roll(g, rng.integers(-2, 3, 2), (0, 1)) if rng.random() < 0.7 else
                         rng.random(g.shape) < 0.05 for g in gt])
        pred[2] = False  # an empty prediction
        ref = vb.Evaluator()
        for p, g in zip(pred, gt):
            ref.feed_frame(p.astype(np.uint8), g.astype(np.uint8))
        ours_j = [jaccard(p, g) for p, g in zip(pred, gt)]
        ours_f = [boundary_f(p, g) for p, g in zip(pred, gt)]
        assert ours_j == pytest.approx(ref.object_iou[1], abs=1e-12)
        assert ours_f == pytest.approx(ref.boundary_f[1], abs=1e-12)


# -- the generated videos and clicks ------------------------------------------------------------------
def test_moving_shapes():
    v = make_videos(40, "test")
    assert v.frames.shape == (40, 8, 3, 32, 32) and v.masks.shape == (40, 8, 32, 32)
    assert torch.equal(v.masks, v.objects == 1)
    assert (v.visible[:, 0] >= OCCLUDED).all()
    assert sum(bool(post_occlusion(x)) for x in v.visible) >= 30       # the occluder's forced crossing
    assert (v.visible == 0).any()                                       # some targets hidden in full
    again = make_videos(3, "test", start=5)
    assert torch.equal(again.frames, v.frames[5:8])                     # video i whatever n
    assert not torch.equal(make_videos(2, "train").frames, v.frames[:2])


def test_clicks():
    m = square(4, 6, 5)
    assert interior_point(m) == (6, 8) and first_click(m) == (6, 8, 1)
    assert interior_point(np.zeros((8, 8), bool)) is None
    gt = square(0, 0, 6)
    assert corrective_click(gt, gt) is None
    miss = gt.copy()
    miss[:, 3:] = False                                                  # missed the right half: positive
    r, c, label = corrective_click(miss, gt)
    assert label == 1 and gt[r, c] and not miss[r, c]
    extra = gt | square(10, 10, 8)                                       # spilled onto a square: negative
    r, c, label = corrective_click(extra, gt)
    assert label == 0 and extra[r, c] and not gt[r, c]
    assert post_occlusion([1.0, 0.9, 0.3, 0.8, 1.0]) == [3, 4] and post_occlusion([1.0, 0.6]) == []


# -- the model -----------------------------------------------------------------------------------------
def test_memory_bank_matches_the_rule():
    rng = np.random.default_rng(0)
    prompted = torch.from_numpy(rng.random((16, 9)) < 0.3)
    for t in range(1, 9):
        for num_recent in (1, 3, 6):
            included, slot = memory_bank(prompted, t, num_recent)
            for i in range(16):
                marks = prompted[i].tolist()
                recent = [s for s in range(t - 1, -1, -1) if not marks[s]][:num_recent]
                want = {s for s in range(t) if marks[s]} | set(recent)
                assert {s for s in range(t) if included[i, s]} == want
                for s in want:
                    assert slot[i, s] == (0 if marks[s] else recent.index(s) + 1)


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = Attention(16, 4)
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    keep = torch.ones(2, 7, dtype=torch.bool)
    keep[0, 4:] = False
    expected, _ = ref(q, k, v, key_padding_mask=~keep)
    assert torch.allclose(ours(q, k, v, keep), expected, atol=1e-6)


def _model(**over):
    torch.manual_seed(0)
    model = build(Config(**{**TINY, **over}))
    for p in model.parameters():  # a model whose every path carries signal (fresh init zeros some gates)
        with torch.no_grad():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("use_memory", [True, False])
def test_streaming_no_frame_sees_a_later_one(use_memory):
    model = _model(use_memory=use_memory)
    v = make_videos(2, "test", frames=4)
    clicks = [{0: [first_click(m[0])]} for m in v.masks.numpy()]
    points = points_tensor(clicks, 4)
    with torch.no_grad():
        logits, scores = model.forward_video(v.frames, points, hard_gate=True)
        changed = v.frames.clone()
        changed[:, 2:] = torch.rand_like(changed[:, 2:])
        logits2, scores2 = model.forward_video(changed, points, hard_gate=True)
    assert torch.allclose(logits[:, :2], logits2[:, :2]) and torch.allclose(scores[:, :2], scores2[:, :2])
    assert not torch.allclose(logits[:, 2:], logits2[:, 2:])


def test_memory_carries_the_prompt_and_no_memory_holds_the_click():
    v = make_videos(2, "test", frames=4)
    a = points_tensor([{0: [(5, 5, 1)]}] * 2, 4)
    b = points_tensor([{0: [(25, 20, 1)]}] * 2, 4)
    with torch.no_grad():
        for use_memory in (True, False):
            model = _model(use_memory=use_memory)
            la, _ = model.forward_video(v.frames, a, hard_gate=False)
            lb, _ = model.forward_video(v.frames, b, hard_gate=False)
            assert not torch.allclose(la[:, 3], lb[:, 3])  # frame 3 depends on frame 0's click, by memory or held click
        # without memory, a frame's mask does not depend on earlier frames' images; with memory it does
        changed = v.frames.clone()
        changed[:, 0] = torch.rand_like(changed[:, 0])
        for use_memory in (False, True):
            model = _model(use_memory=use_memory)
            la, _ = model.forward_video(v.frames, a, hard_gate=False)
            lc, _ = model.forward_video(changed, a, hard_gate=False)
            assert torch.allclose(la[:, 1:], lc[:, 1:], atol=1e-6) == (not use_memory)


def test_training_prompts_and_points():
    cfg = Config(**{**TINY, "corrective_prob": 1.0})
    v = make_videos(6, "train", frames=4)
    pts = training_prompts(v.masks, v.objects, cfg, torch.Generator().manual_seed(0))
    assert pts.shape == (6, 4, 2, 3)
    for i in range(6):
        r, c, label = pts[i, 0, 0].long().tolist()
        assert label == 1 and v.masks[i, 0, r, c]
        later = [(t, p) for t in range(1, 4) for p in pts[i, t] if p[2] != PAD]
        assert len(later) == 1
        t, (r, c, label) = later[0][0], later[0][1].long().tolist()
        assert (label == 1 and v.masks[i, t, r, c]) or (label == 0 and v.objects[i, t, r, c] > 1)
    boxes = training_prompts(v.masks, v.objects, Config(**{**TINY, "box_prob": 1.0}), torch.Generator().manual_seed(0))
    assert (boxes[:, 0, :, 2] == torch.tensor([2.0, 3.0])).all()
    p = points_tensor([{0: [(1, 2, 1)], 2: [(3, 4, 0), (5, 6, 1)]}], 3)
    assert p.shape == (1, 3, 2, 3) and p[0, 1, :, 2].eq(PAD).all() and p[0, 2, 1].tolist() == [5, 6, 1]


class Oracle:
    """Returns the true masks of the test videos, except on frames listed in `wrong` (empty there)
    unless that frame holds a corrective click."""

    def __init__(self, videos, wrong=()):
        self.by_frames = {v.numpy().tobytes(): m for v, m in zip(videos.frames, videos.masks)}
        self.wrong = wrong

    def segment_video(self, frames, clicks):
        out = torch.stack([self.by_frames[f.numpy().tobytes()].clone() for f in frames])
        for i, c in enumerate(clicks):
            for t in self.wrong:
                if t not in c:
                    out[i, t] = False
        return out


def test_evaluator_on_an_oracle():
    cfg = Config(**TINY)
    videos = make_videos(6, "test", frames=4)
    assert isinstance(Oracle(videos), VideoSegmenter)
    perfect = j_and_f(Oracle(videos), cfg, JandFOptions(n=6, frames=4, batch_size=4))
    assert perfect.metrics.pop("refinement_gain") == 0.0
    assert set(perfect.metrics.values()) == {1.0}
    for name, values in perfect.samples.items():
        if name in perfect.metrics:
            assert perfect.metrics[name] == pytest.approx(sum(values) / len(values))
    hurt = j_and_f(Oracle(videos, wrong=(2,)), cfg, JandFOptions(n=6, frames=4, batch_size=4))
    visible2 = videos.masks[:, 2].flatten(1).any(1).float()
    assert hurt.metrics["j_and_f_t2"] == pytest.approx(1 - visible2.mean().item())
    assert hurt.metrics["j_and_f_t1"] == 1.0
    assert hurt.metrics["j_and_f_2click"] == 1.0                         # the second click lands on frame 2
    assert hurt.metrics["refinement_gain"] == pytest.approx(1.0 - hurt.metrics["j_and_f"])


def test_tiny_training_run_and_checkpoint_round_trip(tmp_path):
    cfg = Config(**TINY)
    model = train(cfg, QuietRun(seed=1, folder=tmp_path))
    v = make_videos(2, "test", frames=4)
    clicks = [{0: [first_click(m[0])]} for m in v.masks.numpy()]
    masks = model.segment_video(v.frames, clicks)
    assert masks.shape == (2, 4, 32, 32) and masks.dtype == torch.bool
    model.save(tmp_path / "m.safetensors")
    again = build(cfg).load(tmp_path / "m.safetensors")
    assert torch.equal(again.segment_video(v.frames, clicks), masks)


def test_davis_format_round_trip(tmp_path):
    from evals.tasks.davis import davis_clips, davis_objects, missing, write_davis

    assert len(missing(tmp_path / "nothing", ("train", "val"))) == 4
    root = write_davis(tmp_path / "davis", videos_per_split=2, frames=5, size=32)
    assert missing(root, ("train", "val")) == []
    objects, protocol = davis_objects(root, "val", 32)
    source = make_videos(2, "test", frames=5, size=32)
    first = objects[0]
    assert first.name == "val-shapes-0/1" and torch.equal(first.masks, source.masks[0])  # the target, exactly
    assert protocol["n"] == len(objects) >= 4
    frames, masks, objs = davis_clips(root, "train", 32, 3, 2, seed=1, step=0)
    assert frames.shape == (2, 3, 3, 32, 32) and torch.equal(masks, objs == 1) and masks[:, 0].flatten(1).any(1).all()


def _copy_attention(ours, ref):
    for a, b in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("out", "out_proj")):
        getattr(ours, a).load_state_dict(getattr(ref, b).state_dict())


def test_two_way_transformer_and_position_encoding_match_the_official_sam2():
    """SAM's two-way transformer (the mask decoder's core) and random-Fourier position encoding
    against facebookresearch/sam2's modules given the same weights."""
    pytest.importorskip("sam2")
    from sam2.modeling.position_encoding import PositionEmbeddingRandom
    from sam2.modeling.sam.transformer import TwoWayTransformer

    from reproductions.sam2.model import MaskDecoder, RandomFourierPE

    torch.manual_seed(0)
    dim, heads, mlp, depth = 16, 2, 32, 2
    ref = TwoWayTransformer(depth, dim, heads, mlp).eval()
    for p in ref.parameters():
        with torch.no_grad():
            p.copy_(torch.randn_like(p) * 0.3)
    ours = MaskDecoder(dim, depth, heads, mlp).eval()
    for block, layer in zip(ours.blocks, ref.layers):
        _copy_attention(block.self_attn, layer.self_attn)
        _copy_attention(block.cross_t2i, layer.cross_attn_token_to_image)
        _copy_attention(block.cross_i2t, layer.cross_attn_image_to_token)
        block.mlp[0].load_state_dict(layer.mlp.layers[0].state_dict())
        block.mlp[2].load_state_dict(layer.mlp.layers[1].state_dict())
        for k, norm in enumerate((layer.norm1, layer.norm2, layer.norm3, layer.norm4)):
            block.norms[k].load_state_dict(norm.state_dict())
    _copy_attention(ours.final_attn, ref.final_attn_token_to_image)
    ours.final_norm.load_state_dict(ref.norm_final_attn.state_dict())

    image, image_pe, tokens = torch.randn(2, dim, 4, 4), torch.randn(1, dim, 4, 4), torch.randn(2, 5, dim)
    want_q, want_k = ref(image, image_pe, tokens)
    keys, key_pe = image.flatten(2).transpose(1, 2), image_pe.flatten(2).transpose(1, 2).expand(2, -1, -1)
    queries = tokens
    for block in ours.blocks:  # MaskDecoder.forward's transformer part
        queries, keys = block(queries, keys, tokens, key_pe)
    queries = ours.final_norm(queries + ours.final_attn(queries + tokens, keys + key_pe, keys))
    assert torch.allclose(queries, want_q, atol=1e-5) and torch.allclose(keys, want_k, atol=1e-5)

    pe_ref, pe = PositionEmbeddingRandom(dim // 2), RandomFourierPE(dim)
    pe.gaussian.copy_(pe_ref.positional_encoding_gaussian_matrix[[1, 0]])  # ours reads (row, column), SAM's (x, y)
    assert torch.allclose(pe.grid(4), pe_ref((4, 4)).flatten(1).T, atol=1e-5)
    points = torch.tensor([[[3.0, 7.0], [12.0, 1.0]]])  # (row, column) pixel indices in a 16-pixel image
    want = pe_ref.forward_with_coords(points.flip(-1) + 0.5, (16, 16))
    assert torch.allclose(pe.encode((points + 0.5) / 16), want, atol=1e-5)
