"""SAM 2: Segment Anything in Images and Videos (Ravi et al., arXiv 2408.00714): the paper module.

The model is `model.py` (Section 4, Figure 3: image encoder, prompt encoder, mask decoder with an
occlusion head and object pointers, memory encoder, memory bank, memory attention). This file is
the training recipe (Section 5 and its appendix on training) and the promptable video
segmentation interface the `j_and_f` evaluator scores (`segment_video`, a `VideoSegmenter`).

Training (the paper's, as far as the tiers follow it):
- clips of `frames` frames (the paper: 8); the first frame is prompted, by a positive click
  sampled uniformly inside the object's mask, or (with probability `box_prob`) by its box;
- interactive training: with probability `corrective_prob` one later frame gets a corrective click
  (the paper samples corrective clicks on up to 2 frames), positive inside the object, or, with
  probability 0.3 or when the object is hidden, negative on another object;
- the loss of each frame: mask loss (binary cross-entropy + dice; the paper: focal + dice, 20:1)
  on frames where the object is visible, and the occlusion head's cross-entropy on every frame
  (the paper: "supervised whenever the object is present"... on all frames); summed over frames'
  means, averaged over the batch;
- AdamW with weight decay `weight_decay`, linear warm-up then cosine decay, gradient clipping
  (the paper clips at 0.1).

`use_memory=False` (the no-memory arm) is the same model segmenting each frame on its own, the
clicks of earlier frames carried forward to every later frame: SAM applied frame by frame with the
first frame's click held, the baseline of the paper's claim that the memory tracks the object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.tasks.moving_shapes import first_click, make_videos
from reproductions.common.training import restore, snapshot
from reproductions.sam2.model import BOX_BR, BOX_TL, NEG, PAD, POS, SAM2
from reproductions.vit.classify import learning_rate, param_groups


@dataclass
class Config:
    dataset: str = "moving_shapes"  # or "davis": DAVIS-format videos (DAVIS 2017, SA-V) under data_root
    data_root: str = "data/davis"
    image_size: int = 1024          # the paper's input resolution
    frames: int = 8                 # frames per training clip (the paper's 8)
    patch_size: int = 16
    vit_dim: int = 768              # our ViT-B/16 as the image encoder (the paper: Hiera-B+ / L)
    vit_depth: int = 12
    vit_heads: int = 12
    dim: int = 256                  # d of the prompt encoder, mask decoder and memory attention (the paper's)
    decoder_depth: int = 2          # SAM's two-way transformer
    decoder_heads: int = 8
    decoder_mlp: int = 2048
    mem_dim: int = 64               # memory features (the paper projects them to 64)
    memory_layers: int = 4          # L = 4 memory-attention blocks (the paper's)
    memory_heads: int = 1
    memory_mlp: int = 2048
    num_recent: int = 6             # N = 6 recent frames in the bank besides the prompted ones (the paper's)
    max_pointers: int = 16          # object pointers of up to 16 earlier frames
    use_memory: bool = True         # False: the no-memory arm
    dense_clicks: bool = True       # add the click map's embedding to the frame embedding
    click_sigma: float = 0.03125    # the Gaussian bump of a click, a fraction of the image side (1 px at 32)
    corrective_prob: float = 0.5    # a corrective click on one later frame
    box_prob: float = 0.0           # the first frame prompted by a box instead of a click
    steps: int = 100_000
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.1
    beta2: float = 0.999
    warmup_steps: int = 1_000
    grad_clip: float = 0.1
    log_every: int = 100
    overlays: int = 4               # test videos drawn with their masks in the run dir's overlays.png


def build(cfg: Config) -> "Segmenter":
    return Segmenter(cfg)


# -- prompts -----------------------------------------------------------------------------------------
def points_tensor(clicks: list[dict[int, list[tuple[int, int, int]]]], frames: int, device=None) -> torch.Tensor:
    """Clicks per video (frame -> [(row, column, label)]) as N x T x P x 3, label -1 padding."""
    p = max([1] + [len(c) for per_video in clicks for c in per_video.values()])
    out = torch.full((len(clicks), frames, p, 3), float(PAD), device=device)
    for i, per_video in enumerate(clicks):
        for t, cs in per_video.items():
            for j, c in enumerate(cs):
                out[i, t, j] = torch.tensor([float(v) for v in c])
    return out


def _random_pixel(region: torch.Tensor, gen: torch.Generator) -> tuple[int, int]:
    idx = region.flatten().nonzero()[:, 0]
    k = idx[torch.randint(len(idx), (1,), generator=gen)].item()
    return k // region.shape[1], k % region.shape[1]


def training_prompts(masks: torch.Tensor, objects: torch.Tensor, cfg: Config, gen: torch.Generator) -> torch.Tensor:
    """Prompts of a training batch, N x T x 2 x 3: frame 0 a positive click uniform in the mask (or,
    with probability box_prob, the mask's box); with probability corrective_prob one later frame a
    corrective click (positive in the mask, or negative on another object)."""
    n, t_len = masks.shape[:2]
    pts = torch.full((n, t_len, 2, 3), float(PAD))
    for i in range(n):
        m0 = masks[i, 0]
        if torch.rand(1, generator=gen).item() < cfg.box_prob:
            rows, cols = m0.any(1).nonzero()[:, 0], m0.any(0).nonzero()[:, 0]
            pts[i, 0, 0] = torch.tensor([rows[0], cols[0], BOX_TL], dtype=torch.float32)
            pts[i, 0, 1] = torch.tensor([rows[-1], cols[-1], BOX_BR], dtype=torch.float32)
        else:
            pts[i, 0, 0] = torch.tensor([*_random_pixel(m0, gen), POS], dtype=torch.float32)
        if t_len > 1 and torch.rand(1, generator=gen).item() < cfg.corrective_prob:
            k = 1 + int(torch.randint(t_len - 1, (1,), generator=gen))
            others = (objects[i, k] > 1)
            negative = torch.rand(1, generator=gen).item() < 0.3 or not masks[i, k].any()
            if negative and others.any():
                pts[i, k, 0] = torch.tensor([*_random_pixel(others, gen), NEG], dtype=torch.float32)
            elif masks[i, k].any():
                pts[i, k, 0] = torch.tensor([*_random_pixel(masks[i, k], gen), POS], dtype=torch.float32)
    return pts


# -- the trained thing ------------------------------------------------------------------------------------
class Segmenter(SAM2):
    def __init__(self, cfg: Config):
        super().__init__(cfg.image_size, cfg.patch_size, cfg.vit_dim, cfg.vit_depth, cfg.vit_heads, cfg.dim,
                         cfg.decoder_depth, cfg.decoder_heads, cfg.decoder_mlp, cfg.mem_dim, cfg.memory_layers,
                         cfg.memory_heads, cfg.memory_mlp, cfg.num_recent, cfg.max_pointers, cfg.use_memory,
                         cfg.dense_clicks, cfg.click_sigma * cfg.image_size)

    @torch.no_grad()
    def segment_video(self, frames: torch.Tensor, clicks: list[dict[int, list[tuple[int, int, int]]]]) -> torch.Tensor:
        """Boolean masks N x T x H x W: streaming, with SAM 2's inference gating (a frame whose object
        score is negative is empty)."""
        was_training = self.training
        self.eval()
        try:
            device = self.no_mem_embed.device
            points = points_tensor(clicks, frames.shape[1], device)
            logits, scores = self.forward_video(frames.to(device), points, hard_gate=True)
            return (logits > 0) & (scores > 0)[..., None, None]
        finally:
            self.train(was_training)

    def training_loss(self, frames: torch.Tensor, masks: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, scores = self.forward_video(frames, points, hard_gate=False)
        gt = masks.float()
        visible = gt.flatten(2).amax(-1)                                          # N x T
        bce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none").mean((-1, -2))
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * gt).sum((-1, -2)) + 1) / (p.sum((-1, -2)) + gt.sum((-1, -2)) + 1)
        mask_loss = ((bce + dice) * visible).sum() / visible.sum().clamp(min=1)
        obj_loss = F.binary_cross_entropy_with_logits(scores, visible)
        return {"loss": mask_loss + obj_loss, "mask_loss": mask_loss, "obj_loss": obj_loss}


# -- data ----------------------------------------------------------------------------------------------
def training_clips(cfg: Config, seed: int, step: int):
    """The batch of step `step`: frames N x T x 3 x H x W, masks N x T x H x W, objects N x T x H x W (a
    pure function of seed and step)."""
    if cfg.dataset == "davis":
        from evals.tasks.davis import davis_clips

        return davis_clips(cfg.data_root, "train", cfg.image_size, cfg.frames, cfg.batch_size, seed, step)
    v = make_videos(cfg.batch_size, "train", cfg.frames, cfg.image_size, start=seed * 100_000_000 + step * cfg.batch_size)
    return v.frames, v.masks, v.objects


def required_data(cfg: Config) -> list[str]:
    if cfg.dataset != "davis":
        return []
    from evals.tasks.davis import missing

    return missing(cfg.data_root, ("train", "val"))


def data_fingerprint(cfg: Config) -> str:
    if cfg.dataset == "davis":
        from evals.tasks.davis import fingerprint

        return f"davis-format videos under {cfg.data_root}: {fingerprint(cfg.data_root)}"
    return (f"moving_shapes train, videos seed*1e8 + step*batch onward, {cfg.frames} frames at {cfg.image_size}: "
            f"first batch {make_videos(2, 'train', cfg.frames, cfg.image_size).fingerprint()}")


# -- training ----------------------------------------------------------------------------------------------
def train(cfg: Config, run) -> Segmenter:
    model = build(cfg).to(run.device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2))
    parts, step = {"model": model, "opt": opt}, 0
    if (state := run.resume_state()) is not None:
        step = restore(state, parts)["step"]
    run.progress(cfg.steps)
    model.train()
    sums: dict[str, float] = {}
    seen = 0
    while step < cfg.steps:
        frames, masks, objects = training_clips(cfg, run.seed, step)
        gen = torch.Generator().manual_seed(run.seed * 1_000_003 + step)
        points = training_prompts(masks, objects, cfg, gen)
        # ALGO LOGIC
        lr = learning_rate(step, cfg.lr, cfg.warmup_steps, cfg.steps, "cosine")
        for group in opt.param_groups:
            group["lr"] = lr
        losses = model.training_loss(frames.to(run.device), masks.to(run.device), points.to(run.device))
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        # TRY NOT TO MODIFY: logging, checkpoints
        step += 1
        seen += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, lr=lr, **{k: v / seen for k, v in sums.items()})
            sums, seen = {}, 0
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
        run.advance()
    model.eval()
    if cfg.overlays and cfg.dataset == "moving_shapes":
        save_overlays(model, cfg, run.dir / "overlays.png")
    return model


def save_overlays(model: Segmenter, cfg: Config, path) -> None:
    """Test videos, three rows each: the frames (the click in white), the predicted mask (cyan) and
    the true mask (yellow) over them."""
    from torchvision.utils import save_image

    v = make_videos(cfg.overlays, "test", cfg.frames, cfg.image_size)
    clicks = [{0: [first_click(m[0])]} for m in v.masks.numpy()]
    pred = model.segment_video(v.frames, clicks).cpu().float()
    rows = []
    for i in range(len(v)):
        frames = v.frames[i].clone()
        r, c, _ = clicks[i][0][0]
        frames[0, :, r, c] = 1.0
        tint = lambda m, colour: frames * (1 - 0.6 * m[:, None]) + 0.6 * m[:, None] * torch.tensor(colour)[None, :, None, None]  # noqa: E731
        rows += [frames, tint(pred[i], (0.0, 1.0, 1.0)), tint(v.masks[i].float(), (1.0, 1.0, 0.0))]
    grid = torch.cat(rows).clamp(0, 1)
    grid = F.interpolate(grid, scale_factor=max(1, 64 // cfg.image_size), mode="nearest")
    save_image(grid, str(path), nrow=cfg.frames, padding=1, pad_value=1.0)


def dry_run_step(model: Segmenter, cfg: Config) -> dict[str, float]:
    """One optimisation step on one clip of 2 frames (moving shapes or the data root's)."""
    small = Config(**{**cfg.__dict__, "batch_size": 1, "frames": 2})
    frames, masks, objects = training_clips(small, 1, 0)
    points = training_prompts(masks, objects, small, torch.Generator().manual_seed(0))
    device = model.no_mem_embed.device
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    losses = model.training_loss(frames.to(device), masks.to(device), points.to(device))
    opt.zero_grad()
    losses["loss"].backward()
    opt.step()
    return {k: v.item() for k, v in losses.items()}
