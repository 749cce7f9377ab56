"""J&F: promptable video segmentation scored as in the DAVIS protocol (SAM 2, arXiv 2408.00714).

The measures are DAVIS's (Perazzi et al. 2016; the `davis2017-evaluation` code):

- J, region similarity: the IoU |M & G| / |M | G| of the predicted and true masks, 1 when both
  are empty (`jaccard`);
- F, boundary accuracy: the F-measure 2PR / (P + R) of the two masks' boundaries, each boundary
  the one-pixel map of `seg2bmap` (a pixel differing from its right, lower or lower-right
  neighbour), a boundary pixel matched when the other boundary lies within a disk of radius
  ceil(0.008 x the image diagonal) (1 pixel at 32x32); P = 1, R = 0 when only the truth has a
  boundary, P = 0, R = 1 when only the prediction has one, P = R = 1 when neither has (`boundary_f`);
- J&F = (J + F) / 2.

Protocol (promptable video segmentation with clicks, SAM 2 Section 6.1): each video's target is
prompted by one positive click on frame 0 (at the interior of its mask, `moving_shapes.first_click`)
and segmented on every frame by `segment_video` (a `VideoSegmenter`, streaming: frame t from
frames and clicks up to t). Per video, J and F are averaged over the frames after the prompted
one (1..T-1; DAVIS also leaves out the first frame, whose mask it gives), then averaged over videos.
Also reported, each per video then averaged:

- `j_and_f_t{t}`: the J&F of frame t (t = 0: the prompted frame itself), the per-frame curve;
- `j_and_f_last`: the last frame's;
- `j_and_f_post_occlusion`: the mean over the frames after the target's first occlusion (less
  than half of it visible), where it must be found again; videos without an occlusion are left out;
- with `second_click`: interactive refinement (SAM 2's interactive protocol, one round): a
  corrective click on the frame of lowest J&F among 1..T-1 (`moving_shapes.corrective_click`:
  positive on the missed pixels' interior or negative on the false positives'), the video
  segmented again with both clicks; `j_and_f_2click` over frames 1..T-1, and `refinement_gain`,
  its difference from `j_and_f`.

Every metric is the mean of its per-video samples of the same name. `dataset: moving_shapes`
draws `n` test videos (`evals.tasks.moving_shapes`) at the run's `image_size`; `dataset: davis`
reads a DAVIS-format folder (DAVIS 2017, or SA-V val/test in the same layout) under the run's
`data_root` (`evals.tasks.davis`), each object of each video scored as its own video.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from evals.contract import VideoSegmenter, capability
from evals.evaluators import Measured, register, shrunk
from evals.tasks.moving_shapes import corrective_click, first_click, make_videos, post_occlusion

BOUND_TH = 0.008  # DAVIS: the boundary tolerance, a fraction of the image diagonal


# -- the measures (DAVIS) ---------------------------------------------------------------------------
def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J: IoU of two boolean masks, 1 when both are empty."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS's one-pixel boundary map of a boolean mask (D. Martin's seg2bmap): a pixel is on the
    boundary when it differs from its right (east), lower (south) or lower-right neighbour, the
    last row and column compared along the edge only, the last corner pixel never."""
    seg = np.asarray(seg, dtype=bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """The structuring element of pixels within `radius` of the centre (skimage's `disk`)."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary accuracy F of DAVIS (`db_eval_boundary`)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred.shape))
    pb, gb = seg2bmap(pred), seg2bmap(gt)
    footprint = disk(int(bound_pix))
    p_dil = ndimage.binary_dilation(pb, structure=footprint)
    g_dil = ndimage.binary_dilation(gb, structure=footprint)
    n_p, n_g = pb.sum(), gb.sum()
    if n_p == 0 and n_g > 0:
        precision, recall = 1.0, 0.0
    elif n_p > 0 and n_g == 0:
        precision, recall = 0.0, 1.0
    elif n_p == 0 and n_g == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = (pb & g_dil).sum() / n_p
        recall = (gb & p_dil).sum() / n_g
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def frame_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of a video's predicted and true masks, T x H x W each."""
    j = np.array([jaccard(p, g) for p, g in zip(pred, gt)])
    f = np.array([boundary_f(p, g) for p, g in zip(pred, gt)])
    return j, f


# -- the evaluator ------------------------------------------------------------------------------------
class JandFOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Literal["moving_shapes", "davis"] = "moving_shapes"
    n: int = Field(200, ge=0)          # videos (davis: the first n objects of the split, 0: all)
    frames: int = Field(8, ge=3)       # moving_shapes: frames per video
    batch_size: int = Field(50, ge=1)  # moving_shapes: videos per call
    second_click: bool = True          # measure one round of interactive refinement
    split: str = "val"                 # davis: the ImageSets/2017 list
    max_frames: int = Field(0, ge=0)   # davis: the first frames of each video only (0: all)


def tiny(options: JandFOptions) -> JandFOptions:
    """A dry run's budget: one video of at most 2 frames."""
    return shrunk(options, n=1, batch_size=1, max_frames=2, frames=3)


def metric_names(options: JandFOptions) -> list[str]:
    names = ["j", "f", "j_and_f", "j_and_f_t*", "j_and_f_last", "j_and_f_post_occlusion"]
    return names + (["j_and_f_2click", "refinement_gain"] if options.second_click else [])


def _videos(config, options: JandFOptions):
    """Batches of (frames N x T x 3 x H x W, true masks N x T x H x W, visible shares N x T), and the protocol."""
    if options.dataset == "davis":
        from evals.tasks.davis import davis_objects

        videos, protocol = davis_objects(config.data_root, options.split, config.image_size, options.n, options.max_frames)
        return [(v.frames[None], v.masks[None], v.visible[None]) for v in videos], protocol
    if options.n < 1:
        raise ValueError("j_and_f: moving_shapes needs n >= 1 videos")
    data = make_videos(options.n, "test", options.frames, config.image_size)
    b = options.batch_size
    batches = [(data.frames[i:i + b], data.masks[i:i + b], data.visible[i:i + b]) for i in range(0, len(data), b)]
    protocol = {"dataset": "moving_shapes", "split": "test", "n": len(data), "frames": options.frames,
                "resolution": config.image_size, "data_fingerprint": data.fingerprint()}
    return batches, protocol


def _segment(model, frames: torch.Tensor, clicks: list[dict[int, list[tuple[int, int, int]]]]) -> np.ndarray:
    out = model.segment_video(frames, clicks)
    if tuple(out.shape) != (frames.shape[0], frames.shape[1], *frames.shape[-2:]):
        raise ValueError(f"j_and_f: segment_video gave shape {tuple(out.shape)}, expected "
                         f"{(frames.shape[0], frames.shape[1], *frames.shape[-2:])}")
    return out.detach().cpu().numpy().astype(bool)


@register("j_and_f", version=1, options=JandFOptions, tiny=tiny, metric_names=metric_names)
def j_and_f(agent, config, options: JandFOptions) -> Measured:
    model = capability(agent, VideoSegmenter, "j_and_f")
    batches, protocol = _videos(config, options)
    samples: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(float(value))

    with torch.no_grad():
        for frames, gt, visible in batches:
            gt_np = gt.numpy().astype(bool)
            clicks = [{0: [first_click(g[0])]} for g in gt_np]
            pred = _segment(model, frames, clicks)
            second = []
            for i in range(len(frames)):
                j, f = frame_scores(pred[i], gt_np[i])
                jf = (j + f) / 2
                add("j", j[1:].mean())
                add("f", f[1:].mean())
                add("j_and_f", jf[1:].mean())
                for t in range(len(jf)):
                    add(f"j_and_f_t{t}", jf[t])
                add("j_and_f_last", jf[-1])
                if after := post_occlusion(visible[i]):
                    add("j_and_f_post_occlusion", jf[after].mean())
                if options.second_click:
                    k = 1 + int(np.argmin(jf[1:]))
                    c = corrective_click(pred[i][k], gt_np[i][k])
                    second.append(({0: clicks[i][0]} | ({k: [c]} if c is not None else {}), jf[1:].mean()))
            if options.second_click:
                pred2 = _segment(model, frames, [c for c, _ in second])
                for i, (_, first_jf) in enumerate(second):
                    j, f = frame_scores(pred2[i], gt_np[i])
                    jf2 = ((j + f) / 2)[1:].mean()
                    add("j_and_f_2click", jf2)
                    add("refinement_gain", jf2 - first_jf)
    if not samples:
        raise ValueError(f"j_and_f: the {protocol['dataset']} split has no videos")
    protocol |= {"measures": "DAVIS J (IoU, 1 when both empty) and F (seg2bmap boundaries, disk tolerance "
                             f"ceil({BOUND_TH} x diagonal)); per video over frames 1..T-1, then over videos",
                 "prompt": "one positive click on frame 0 at the interior of the target's mask",
                 "second_click": ("a corrective click on the frame of lowest J&F (positive on missed pixels, "
                                  "negative on false positives, at the region's interior), the video segmented "
                                  "again") if options.second_click else None,
                 "post_occlusion": "frames after the first with less than half of the target visible",
                 "videos_with_occlusion": len(samples.get("j_and_f_post_occlusion", []))}
    return Measured(metrics={k: sum(v) / len(v) for k, v in samples.items()}, samples=samples, protocol=protocol)
