"""SAM 2 benchmarks: the mask decoder's two-way transformer (ours) against facebookresearch/sam2's
`TwoWayTransformer` at the mini tier's shape and the same weights (same process, interleaved
repeats, the median of each), frames per second for a forward pass and for a training step
(forward and backward); and our whole streaming video forward (image encoder, memory attention,
decoder, memory encoder) at the mini shape, frames per second, with no baseline."""

from __future__ import annotations

import statistics
import time

import torch

from evals.tasks.moving_shapes import first_click, make_videos
from reproductions.sam2.model import MaskDecoder
from reproductions.sam2.sam2 import Config, Segmenter, points_tensor

REPEATS = 5


def _median_time(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(cfg: Config) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    n = cfg.batch_size * cfg.frames
    grid = cfg.image_size // cfg.patch_size
    image, pe = torch.randn(n, cfg.dim, grid, grid), torch.randn(1, cfg.dim, grid, grid)
    tokens = torch.randn(n, 4, cfg.dim)  # object-score and mask tokens, a click and a padding point
    try:
        from sam2.modeling.sam.transformer import TwoWayTransformer
    except ImportError:
        TwoWayTransformer = None
    if TwoWayTransformer is not None:
        ref = TwoWayTransformer(cfg.decoder_depth, cfg.dim, cfg.decoder_heads, cfg.decoder_mlp)
        ours = MaskDecoder(cfg.dim, cfg.decoder_depth, cfg.decoder_heads, cfg.decoder_mlp)
        keys, key_pe = image.flatten(2).transpose(1, 2), pe.flatten(2).transpose(1, 2).expand(n, -1, -1)

        def ours_fwd():
            q, k = tokens, keys
            for block in ours.blocks:
                q, k = block(q, k, tokens, key_pe)
            return ours.final_norm(q + ours.final_attn(q + tokens, k + key_pe, k)), k

        def step(fwd):
            def go():
                q, k = fwd()
                (q.sum() + k.sum()).backward()
            return go

        ref_fwd = lambda: ref(image, pe, tokens)  # noqa: E731
        shape = f"two-way transformer (d {cfg.dim}, depth {cfg.decoder_depth}, {grid}x{grid} image tokens), {n} frames"
        for what, a, b in (("forward", ours_fwd, ref_fwd), ("forward + backward", step(ours_fwd), step(ref_fwd))):
            times = {"ours": [], "sam2": []}
            for _ in range(REPEATS):  # interleaved
                times["ours"].append(_median_time(a, 1))
                times["sam2"].append(_median_time(b, 1))
            o, s = n / statistics.median(times["ours"]), n / statistics.median(times["sam2"])
            rows.append({"benchmark": f"{what}, {shape}", "ours": o, "baseline": s,
                         "unit": "frames/s (vs facebookresearch/sam2 TwoWayTransformer)", "ratio": o / s})
    model = Segmenter(cfg).eval()
    v = make_videos(cfg.batch_size, "test", cfg.frames, cfg.image_size)
    clicks = [{0: [first_click(m[0])]} for m in v.masks.numpy()]
    points = points_tensor(clicks, cfg.frames)
    with torch.no_grad():
        dt = _median_time(lambda: model.forward_video(v.frames, points, hard_gate=True))
    rows.append({"benchmark": f"streaming video forward, mini SAM 2 ({cfg.batch_size} videos x {cfg.frames} frames)",
                 "ours": n / dt, "baseline": float("nan"), "unit": "frames/s", "ratio": float("nan")})
    return rows
