"""Latent Diffusion (Rombach, Blattmann, Lorenz, Esser and Ommer, "High-Resolution Image Synthesis
with Latent Diffusion Models", arXiv 2112.10752): the trained thing and its two-stage training.

Stage 1 (Section 3.1): the KL-regularised autoencoder of `autoencoder.py`, downsampling by f.
Stage 2 (Section 3.2, eq. (2)): DDPM's process and L_simple in its latent space,
    L_LDM = E_{E(x), y, eps ~ N(0, 1), t} || eps - eps_theta(z_t, t, y) ||^2,
with DDPM's U-Net (reproductions.ddpm, imported) as eps_theta and the latents scaled to unit
standard deviation (the released code's `scale_factor`: 1 / std of the encoded training latents).
f = 1 is pixel-space diffusion (no autoencoder, the same U-Net on the images), the paper's LDM-1
(Figure 6 / 7 baseline).

Conditioning (Section 3.3) on the class y: a learned class embedding added to the time embedding
(ADM's class conditioning, which the released class-conditional code also supports through
`num_classes`), with one extra "null" class for classifier-free guidance: during training the
label is replaced by the null class with probability `p_uncond`.

Compute (Figures 6 and 7 compare at equal training compute): `train_gflops` is the run's budget of
floating-point operations for training (stage 1, encoding the training set, and stage 2, counted by
torch's FlopCounterMode on one step of each: the matrix products and convolutions, forward and
backward); the diffusion stage gets the steps that fit in what stage 1 leaves.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from evals.contract import SafetensorsModule
from evals.tasks.image_loaders import CHANNELS, NUM_CLASSES, fingerprint, image_dataset, missing_data
from reproductions.ddpm.ddpm import save_grid, to_unit
from reproductions.ddpm.diffusion import GaussianDiffusion
from reproductions.ddpm.unet import UNet
from reproductions.ldm.autoencoder import KLAutoencoder
from reproductions.ldm.sampling import ancestral_sample, ddim_sample, guided_eps


@dataclass
class Config:
    dataset: str = "imagenet"            # an image dataset of evals.tasks.image_loaders (labelled)
    data_root: str = "data/imagenet"
    image_size: int = 256
    num_train: int = 0                    # shapes: images generated for training (0: the loader's default)
    f: int = 4                            # the autoencoder's downsampling factor; 1: pixel-space diffusion
    # stage 1: the autoencoder
    ae_ch: int = 128
    ae_ch_mult: tuple[int, ...] = (1, 2, 4)   # 2^(len - 1) = f
    z_channels: int = 3
    kl_weight: float = 1e-6
    ae_steps: int = 100_000
    ae_batch_size: int = 12
    ae_lr: float = 4.5e-6
    # stage 2: the diffusion model
    T: int = 1000
    beta_1: float = 1e-4                  # DDPM's linear schedule (the released LDM code: sqrt-linear 0.0015..0.0195)
    beta_T: float = 0.02
    ch: int = 192
    ch_mult: tuple[int, ...] = (1, 2, 3, 5)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32, 16, 8)
    dropout: float = 0.0
    groups: int = 32
    p_uncond: float = 0.1                 # the label dropped to the null class (classifier-free guidance)
    steps: int = 0                        # diffusion steps; 0: as many as fit in train_gflops
    train_gflops: float = 0.0             # the training budget (both stages); 0: `steps` decides
    batch_size: int = 1200
    lr: float = 1e-4
    warmup: int = 10_000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    # sampling
    ddim_steps: int = 250
    ddim_eta: float = 0.0
    guidance: float = 1.5                 # `sample` (the fid evaluator's) uses this scale
    measured: tuple[str, ...] = ("guidance", "ancestral")  # what class_conditional measures beyond DDIM at s = 1
    log_every: int = 100
    grid_per_class: int = 8


def _check_f(cfg: Config) -> None:
    if cfg.f < 1 or (cfg.f > 1 and 2 ** (len(cfg.ae_ch_mult) - 1) != cfg.f):
        raise ValueError(f"ldm: f={cfg.f} needs ae_ch_mult of {int(math.log2(max(cfg.f, 1))) + 1} entries, got {cfg.ae_ch_mult}")


class ClassConditionalUNet(nn.Module):
    """DDPM's U-Net with a class embedding added to its time embedding: eps_theta(z_t, t, y).
    DDPM's network computes its time embedding inside `forward` through `unet.temb`; that module
    is wrapped here so that it adds the embedding of the labels given to this forward."""

    def __init__(self, unet: UNet, num_classes: int):
        super().__init__()
        self.unet = unet
        self.null = num_classes
        self.label_emb = nn.Embedding(num_classes + 1, unet.temb[-1].out_features)
        self.unet.temb = _TimeAndClass(unet.temb, self.label_emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.unet.temb.labels = y
        try:
            return self.unet(x, t)
        finally:
            self.unet.temb.labels = None


class _TimeAndClass(nn.Module):
    def __init__(self, temb: nn.Module, label_emb: nn.Embedding):
        super().__init__()
        self.temb = temb
        self.labels: torch.Tensor | None = None
        self._label_emb = [label_emb]  # a reference, not a second registration of its parameters

    def forward(self, sinusoid: torch.Tensor) -> torch.Tensor:
        if self.labels is None:
            raise RuntimeError("ClassConditionalUNet: call it with labels")
        return self.temb(sinusoid) + self._label_emb[0](self.labels)


class LDM(SafetensorsModule):
    """The autoencoder (f > 1), eps_theta and its EMA copy (sampled from), the diffusion."""

    def __init__(self, cfg: Config):
        super().__init__()
        _check_f(cfg)
        self.cfg = cfg
        self.channels = CHANNELS[cfg.dataset]
        self.num_classes = NUM_CLASSES[cfg.dataset]
        self.measured = tuple(cfg.measured)
        self.autoencoder = KLAutoencoder(self.channels, cfg.ae_ch, tuple(cfg.ae_ch_mult), cfg.z_channels, cfg.groups) if cfg.f > 1 else None
        self.latent_channels = cfg.z_channels if cfg.f > 1 else self.channels
        self.latent_size = cfg.image_size // cfg.f
        unet = UNet(self.latent_channels, self.latent_size, cfg.ch, tuple(cfg.ch_mult), cfg.num_res_blocks,
                    tuple(cfg.attn_resolutions), cfg.dropout, cfg.groups)
        self.model = ClassConditionalUNet(unet, self.num_classes)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.diffusion = GaussianDiffusion(cfg.T, cfg.beta_1, cfg.beta_T)  # DDPM's, linear betas
        self.register_buffer("scale_factor", torch.ones(()))
        self.register_buffer("training_gflops", torch.zeros(()))  # what training spent (both stages)

    def train(self, mode: bool = True) -> "LDM":
        super().train(mode)
        self.ema.eval()
        return self

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p, 1.0 - decay)

    def to_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x in [-1, 1] to the diffusion's space: a draw of q_E(z | x), scaled (pixels: x itself)."""
        if self.autoencoder is None:
            return x
        q = self.autoencoder.encode(x)
        return (q.sample(generator) if generator is not None else q.mean) * self.scale_factor

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """The diffusion's space to images in [-1, 1] (unclamped)."""
        return z if self.autoencoder is None else self.autoencoder.decode(z / self.scale_factor)

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_classes(self, labels: torch.Tensor, generator: torch.Generator, guidance: float = 1.0,
                       sampler: str = "ddim", steps: int = 50) -> torch.Tensor:
        """Images of the classes `labels` (N), float N x C x H x W in [0, 1] on the CPU: classifier-free
        guidance at scale `guidance`, `sampler` "ddim" (`steps` steps, eta from the config) or
        "ancestral" (all T steps of DDPM's Algorithm 2; `steps` ignored)."""
        device = self.diffusion.betas.device
        labels = labels.to(device)
        eps = guided_eps(self.ema, labels, self.model.null, guidance)
        shape = (len(labels), self.latent_channels, self.latent_size, self.latent_size)
        if sampler == "ddim":
            z = ddim_sample(eps, self.diffusion, shape, steps, generator, device, self.cfg.ddim_eta)
        elif sampler == "ancestral":
            z = ancestral_sample(eps, self.diffusion, shape, generator, device, clip_x0=self.autoencoder is None)
        else:
            raise ValueError(f"ldm: unknown sampler {sampler!r} (ddim or ancestral)")
        return to_unit(self.from_latent(z).cpu())

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n images of uniformly drawn classes, the config's guidance scale and DDIM steps (fid)."""
        labels = torch.randint(self.num_classes, (n,), generator=generator, device=generator.device)
        return self.sample_classes(labels, generator, self.cfg.guidance, "ddim", self.cfg.ddim_steps)

    def num_parameters(self) -> int:
        ae = sum(p.numel() for p in self.autoencoder.parameters()) if self.autoencoder is not None else 0
        return ae + sum(p.numel() for p in self.model.parameters())


# -- data ----------------------------------------------------------------------------------------
def _dataset(cfg: Config, split: str = "train"):
    return image_dataset(cfg.dataset, split, cfg.image_size, cfg.data_root, n=cfg.num_train if split == "train" else 0)


class Batches:
    """Random training batches (images in [-1, 1], labels) drawn with `generator`: by index for an
    in-memory dataset, else through a shuffling DataLoader (ImageNet)."""

    def __init__(self, cfg: Config, generator: torch.Generator, device: torch.device):
        self.ds, self.gen, self.device = _dataset(cfg), generator, device
        self.memory = isinstance(self.ds, TensorDataset)
        if self.memory:
            self.x = self.ds.tensors[0].to(device) * 2.0 - 1.0
            self.y = self.ds.tensors[1].to(device)
        self._iters: dict[int, object] = {}

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.memory:
            idx = torch.randint(len(self.x), (batch_size,), generator=self.gen, device=self.gen.device).to(self.device)
            return self.x[idx], self.y[idx]
        it = self._iters.get(batch_size)
        if it is None:
            it = self._iters[batch_size] = iter(_forever(DataLoader(self.ds, batch_size, shuffle=True, drop_last=True, num_workers=4)))
        x, y = next(it)
        return x.to(self.device) * 2.0 - 1.0, y.to(self.device)


def _forever(loader):
    while True:
        yield from loader


def _step_gflops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def build(cfg: Config) -> LDM:
    return LDM(cfg)


def _warm(lr: float, step: int, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / warmup) if warmup else lr


def train(cfg: Config, run) -> LDM:
    model = build(cfg).to(run.device)
    gen = torch.Generator(device=run.device).manual_seed(run.seed)
    batches = Batches(cfg, gen, run.device)
    ae, step = model.autoencoder, 0

    # stage 1: the autoencoder
    ae_gflops = 0.0
    if ae is not None:
        probe = copy.deepcopy(ae)
        x_probe = batches.x[: cfg.ae_batch_size] if batches.memory else torch.zeros(cfg.ae_batch_size, model.channels, cfg.image_size, cfg.image_size, device=run.device)
        ae_step = _step_gflops(lambda: probe.loss(x_probe, cfg.kl_weight, torch.Generator(device=run.device).manual_seed(0))[0].backward())
        del probe
        ae_gflops = ae_step * cfg.ae_steps
    diff_steps = cfg.steps
    run.progress(cfg.ae_steps if ae is not None else 0)
    if ae is not None:
        opt_ae = torch.optim.Adam(ae.parameters(), lr=cfg.ae_lr)
        ae.train()
        sums = {"ae_loss": 0.0, "rec_l1": 0.0, "kl": 0.0}
        while step < cfg.ae_steps:
            x, _ = batches(cfg.ae_batch_size)
            for g in opt_ae.param_groups:
                g["lr"] = _warm(cfg.ae_lr, step, cfg.warmup)
            loss, parts = ae.loss(x, cfg.kl_weight, gen)
            opt_ae.zero_grad(set_to_none=True)
            loss.backward()
            opt_ae.step()
            for k, v in (("ae_loss", loss.detach()), *parts.items()):
                sums[k] += float(v)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.ae_steps:
                n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
                run.log(step, **{k: v / n for k, v in sums.items()})
                sums = dict.fromkeys(sums, 0.0)
            run.advance()
        ae.eval().requires_grad_(False)

    # the latents of the training set (in memory), and the scale factor
    encode_gflops, latents = 0.0, None
    if ae is not None and batches.memory:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            moments = torch.cat([ae.encoder(batches.x[i:i + 500]) for i in range(0, len(batches.x), 500)])
        encode_gflops = counter.get_total_flops() / 1e9
        mean, logvar = moments.chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        z = mean + std * torch.randn(mean.shape, generator=gen, device=gen.device).to(mean.device)
        model.scale_factor.fill_(1.0 / z.std().item())
        latents = (mean, std)
    elif ae is not None:
        with torch.no_grad():
            model.scale_factor.fill_(1.0 / model.to_latent(batches(cfg.batch_size)[0], gen).std().item())

    # stage 2: the diffusion model, for the steps the budget leaves
    probe = copy.deepcopy(model.model)
    zp = torch.zeros(cfg.batch_size, model.latent_channels, model.latent_size, model.latent_size, device=run.device)
    yp = torch.zeros(cfg.batch_size, dtype=torch.long, device=run.device)
    g0 = torch.Generator(device=run.device).manual_seed(0)
    diff_step = _step_gflops(lambda: model.diffusion.loss(lambda x, i: probe(x, i, yp), zp, g0).backward())
    if not batches.memory and ae is not None:  # encoding each batch on the fly
        diff_step += _step_gflops(lambda: ae.encoder(torch.zeros(cfg.batch_size, model.channels, cfg.image_size, cfg.image_size, device=run.device)))
    del probe
    if cfg.train_gflops > 0:
        diff_steps = int((cfg.train_gflops - ae_gflops - encode_gflops) // diff_step)
        if diff_steps < 1:
            raise ValueError(f"ldm: the autoencoder spends {ae_gflops + encode_gflops:.0f} of the {cfg.train_gflops:.0f} GFLOPs: none left for diffusion")
    if diff_steps < 1:
        raise ValueError("ldm: set steps or train_gflops")
    model.training_gflops.fill_(ae_gflops + encode_gflops + diff_steps * diff_step)
    run.log(step, diffusion_steps=float(diff_steps), gflops_per_diffusion_step=diff_step,
            autoencoder_gflops=ae_gflops + encode_gflops, training_gflops=float(model.training_gflops))
    run.progress(step + diff_steps)
    run.advance(step)

    opt = torch.optim.Adam(model.model.parameters(), lr=cfg.lr)
    model.model.train()
    loss_sum, start = torch.zeros((), device=run.device), step
    for k in range(diff_steps):
        if latents is not None:
            idx = torch.randint(len(latents[0]), (cfg.batch_size,), generator=gen, device=gen.device).to(run.device)
            y = batches.y[idx]
            eps = torch.randn(latents[0][idx].shape, generator=gen, device=gen.device).to(run.device)
            z0 = (latents[0][idx] + latents[1][idx] * eps) * model.scale_factor
        else:
            x, y = batches(cfg.batch_size)
            with torch.no_grad():
                z0 = model.to_latent(x, gen)
        drop = torch.rand(len(y), generator=gen, device=gen.device).to(run.device) < cfg.p_uncond
        y = torch.where(drop, torch.full_like(y, model.model.null), y)
        for g in opt.param_groups:
            g["lr"] = _warm(cfg.lr, k, cfg.warmup)
        loss = model.diffusion.loss(lambda xt, i: model.model(xt, i, y), z0, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.model.parameters(), cfg.grad_clip)
        opt.step()
        model.update_ema(cfg.ema_decay)
        loss_sum += loss.detach()
        step += 1
        done = k + 1
        if done % cfg.log_every == 0 or done == diff_steps:
            n = cfg.log_every if done % cfg.log_every == 0 else done % cfg.log_every
            run.log(step, loss=(loss_sum / n).item(), grad_norm=grad_norm.item())
            loss_sum.zero_()
        run.advance()
    model.eval()
    save_figures(model, batches, run.dir, run.seed)
    return model


def save_figures(model: LDM, batches: Batches, folder: Path, seed: int) -> None:
    """samples.png: one row per class, DDIM at the config's steps, guidance 1 on the left half and
    3 on the right; reconstructions.png (f > 1): training images over their autoencoder round trip."""
    cfg, k = model.cfg, model.cfg.grid_per_class
    labels = torch.arange(model.num_classes).repeat_interleave(k)
    halves = [model.sample_classes(labels, torch.Generator().manual_seed(seed), s, "ddim", cfg.ddim_steps) for s in (1.0, 3.0)]
    grid = torch.cat([h.reshape(model.num_classes, k, *h.shape[1:]) for h in halves], dim=1).flatten(0, 1)
    save_grid(grid, Path(folder) / "samples.png", cols=2 * k)
    if model.autoencoder is not None:
        x, _ = batches(16) if batches.memory else (torch.zeros(0), None)
        if len(x):
            with torch.no_grad():
                rec = model.from_latent(model.to_latent(x))
            save_grid(torch.cat([to_unit(x.cpu()), to_unit(rec.cpu())]), Path(folder) / "reconstructions.png", cols=16)


def data_fingerprint(cfg: Config) -> str:
    return f"{cfg.dataset} train size={cfg.image_size}: {fingerprint(_dataset(cfg))}"


def dry_run_step(model: LDM, cfg: Config) -> dict[str, float]:
    """One step of each stage on two random images (for `--dry-run` of the full tier). Both networks
    are convolutional (attention works at any size), so the images are a quarter of the tier's side
    (at least 8 f pixels): the same weights and code path in a fraction of the time."""
    gen = torch.Generator().manual_seed(0)
    side = min(cfg.image_size, max(cfg.image_size // 4, 8 * cfg.f))
    x = torch.rand(2, model.channels, side, side, generator=gen) * 2 - 1
    y = torch.tensor([0, model.model.null])
    out = {}
    if model.autoencoder is not None:
        loss, _ = model.autoencoder.loss(x, cfg.kl_weight, gen)
        loss.backward()
        torch.optim.Adam(model.autoencoder.parameters(), lr=cfg.ae_lr).step()
        out["ae_loss"] = loss.item()
    with torch.no_grad():
        z = model.to_latent(x, gen)
    opt = torch.optim.Adam(model.model.parameters(), lr=cfg.lr)
    model.model.train()
    loss = model.diffusion.loss(lambda xt, i: model.model(xt, i, y), z, gen)
    loss.backward()
    out["grad_norm"] = nn.utils.clip_grad_norm_(model.model.parameters(), cfg.grad_clip).item()
    opt.step()
    model.update_ema(cfg.ema_decay)
    out["loss"] = loss.item()
    return out


def required_data(cfg: Config) -> list[str]:
    return missing_data(cfg.dataset, cfg.data_root)
