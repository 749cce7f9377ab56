"""DDPM (Ho, Jain and Abbeel, "Denoising Diffusion Probabilistic Models", arXiv 2006.11239): the
trained thing (U-Net, its EMA copy, the diffusion) and the training loop of Algorithm 1.

The defaults of `Config` are the paper's CIFAR-10 setting (Section 4 and Appendix B): T = 1000,
betas linear 1e-4..0.02, a 35.7M-parameter U-Net (ch 128, multipliers 1, 2, 2, 2, two residual
blocks per resolution, attention at 16x16, dropout 0.1), Adam at 2e-4 with 5,000 warm-up steps,
batch 128, 800k steps, random horizontal flips, EMA of the weights with decay 0.9999; samples are
drawn from the EMA weights. Gradient-norm clipping at 1 is the authors' released code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import TensorDataset

from evals.contract import SafetensorsModule
from evals.tasks.image_loaders import CHANNELS, fingerprint, image_dataset, missing_data
from reproductions.common.training import restore, snapshot
from reproductions.ddpm.diffusion import GaussianDiffusion
from reproductions.ddpm.unet import UNet

STRIP_STEPS = 10  # the denoising strip shows x_T, then every T/10 steps, down to x_0
STRIP_ROWS = 8


@dataclass
class Config:
    dataset: str = "cifar10"            # an image dataset of evals.tasks.image_loaders
    data_root: str = "data/cifar10"     # cifar10: the folder holding cifar-10-batches-py/
    image_size: int = 32
    T: int = 1000
    beta_1: float = 1e-4
    beta_T: float = 0.02
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    groups: int = 32                    # group normalisation's groups
    steps: int = 800_000
    batch_size: int = 128
    lr: float = 2e-4
    warmup: int = 5000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    random_flip: bool = True
    clip_x0: bool = True                # sampling: clip the predicted x_0 to [-1, 1] (see diffusion.p_mean)
    log_every: int = 100
    grid: int = 64                      # samples drawn for samples.png at the end of training


class DDPM(SafetensorsModule):
    """eps_theta (trained), its EMA copy (sampled from) and the fixed diffusion."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.channels = CHANNELS[cfg.dataset]
        self.unet = UNet(self.channels, cfg.image_size, cfg.ch, tuple(cfg.ch_mult), cfg.num_res_blocks,
                         tuple(cfg.attn_resolutions), cfg.dropout, cfg.groups)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False).eval()
        self.diffusion = GaussianDiffusion(cfg.T, cfg.beta_1, cfg.beta_T)

    def train(self, mode: bool = True) -> "DDPM":
        super().train(mode)
        self.ema.eval()  # the EMA network is only ever sampled from: no dropout
        return self

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        for e, p in zip(self.ema.parameters(), self.unet.parameters()):
            e.lerp_(p, 1.0 - decay)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n images from the EMA weights by ancestral sampling (Algorithm 2), float N x C x H x W in
        [0, 1] on the CPU."""
        return self.trajectory(n, generator, keep=())[0]

    @torch.no_grad()
    def trajectory(self, n: int, generator: torch.Generator, keep: tuple[int, ...]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """`sample`, and the states x_t (in [-1, 1]) at the paper-times t in `keep`."""
        shape = (n, self.channels, self.cfg.image_size, self.cfg.image_size)
        device = self.diffusion.betas.device
        x0, kept = self.diffusion.p_sample_loop(self.ema, shape, generator, device, self.cfg.clip_x0, keep)
        return to_unit(x0.cpu()), kept

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (the model's data range, Section 4) to [0, 1]."""
    return ((x.clamp(-1.0, 1.0) + 1.0) / 2.0)


def training_images(cfg: Config) -> torch.Tensor:
    """The training split as float N x C x H x W in [-1, 1]."""
    ds = image_dataset(cfg.dataset, "train", cfg.image_size, cfg.data_root)
    x = ds.tensors[0] if isinstance(ds, TensorDataset) else torch.stack([ds[i][0] for i in range(len(ds))])
    return x * 2.0 - 1.0


def build(cfg: Config) -> DDPM:
    return DDPM(cfg)


def train(cfg: Config, run) -> DDPM:
    data = training_images(cfg).to(run.device)
    model = build(cfg).to(run.device)
    opt = torch.optim.Adam(model.unet.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=run.device).manual_seed(run.seed)  # batches, t and eps
    parts = {"model": model, "opt": opt, "gen": gen}
    step = 0
    resumed = run.resume_state()
    if resumed is not None:
        step = restore(resumed, parts)["step"]

    run.progress(cfg.steps)
    model.train()
    loss_sum = torch.zeros((), device=run.device)
    while step < cfg.steps:
        idx = torch.randint(len(data), (cfg.batch_size,), generator=gen, device=gen.device).to(data.device)
        x0 = data[idx]
        if cfg.random_flip:
            flip = torch.rand(cfg.batch_size, generator=gen, device=gen.device).to(data.device) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
        for group in opt.param_groups:
            group["lr"] = lr
        loss = model.diffusion.loss(model.unet, x0, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.unet.parameters(), cfg.grad_clip)
        opt.step()
        model.update_ema(cfg.ema_decay)
        loss_sum += loss.detach()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            values = {"loss": (loss_sum / n).item(), "grad_norm": grad_norm.item(), "lr": lr}
            run.log(step, **values)
            loss_sum.zero_()
            # only here, where the running loss is empty, so that a resumed run logs the same values
            run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
        run.advance()
    model.eval()
    save_figures(model, run.dir, run.seed)
    return model


def save_figures(model: DDPM, folder: Path, seed: int) -> None:
    """samples.png: a grid of `cfg.grid` samples; denoising.png: one row per sample, x_T on the left
    to x_0 on the right, every T/10 steps of Algorithm 2."""
    T = model.cfg.T
    keep = tuple(range(T, -1, -max(T // STRIP_STEPS, 1)))
    images, kept = model.trajectory(model.cfg.grid, torch.Generator().manual_seed(seed), keep)
    save_grid(images, Path(folder) / "samples.png", cols=int(np.ceil(np.sqrt(len(images)))))
    rows = min(STRIP_ROWS, len(images))
    strip = torch.stack([to_unit(kept[t][:rows]) for t in keep], dim=1).flatten(0, 1)  # row-major: sample, then t
    save_grid(strip, Path(folder) / "denoising.png", cols=len(keep))


def save_grid(images: torch.Tensor, path: Path, cols: int, pad: int = 1) -> None:
    """Float N x C x H x W in [0, 1] as one PNG, tiles scaled up (nearest) to at least 48 pixels."""
    n, c, h, w = images.shape
    scale = max(1, 48 // h)
    rows = -(-n // cols)
    canvas = torch.ones(c, rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad)
    tiles = images.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    for k in range(n):
        r, q = divmod(k, cols)
        y, x = pad + r * (h * scale + pad), pad + q * (w * scale + pad)
        canvas[:, y:y + h * scale, x:x + w * scale] = tiles[k]
    pixels = (canvas * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels[:, :, 0] if c == 1 else pixels).save(path)


def data_fingerprint(cfg: Config) -> str:
    return f"{cfg.dataset} train size={cfg.image_size}: {fingerprint(image_dataset(cfg.dataset, 'train', cfg.image_size, cfg.data_root))}"


def dry_run_step(model: DDPM, cfg: Config) -> dict[str, float]:
    """One optimisation step of L_simple on two random images (for `--dry-run` of the full tier)."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, model.channels, cfg.image_size, cfg.image_size, generator=gen) * 2 - 1
    opt = torch.optim.Adam(model.unet.parameters(), lr=cfg.lr)
    model.train()
    loss = model.diffusion.loss(model.unet, x0, gen)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.unet.parameters(), cfg.grad_clip)
    opt.step()
    model.update_ema(cfg.ema_decay)
    return {"loss": loss.item(), "grad_norm": grad_norm.item()}


def required_data(cfg: Config) -> list[str]:
    return missing_data(cfg.dataset, cfg.data_root)
