"""ControlNet (arXiv 2302.05543) on the latent diffusion model of reproductions.ldm: the paper module
the harness loads. Training: the base LDM first (reproductions.ldm.train, through the same run;
trained once per seed and process and shared by the arms that follow, `trained_once`), then, with the base locked, the control branch of `control.py` on (image, condition) pairs, the
condition the image's Canny edge map (OpenCV) and the class label dropped to the null class half
of the time (the paper replaces 50% of the text prompts with empty strings, Section 3.3), with
L_simple of the base's process (the paper's eq. (5))."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import save_file

from evals.contract import SafetensorsModule
from evals.tasks.edges import canny_edges
from evals.tasks.image_loaders import image_dataset
from reproductions.common.trained_once import Log, trained_once
from reproductions.controlnet.control import ControlNet
from reproductions.ddpm.ddpm import save_grid, to_unit
from reproductions.ldm import ldm
from reproductions.ldm.sampling import ddim_sample


@dataclass
class Config(ldm.Config):
    variant: str = "full"              # full, lite (shallow condition path) or no_zero (random-init joins)
    control_steps: int = 10_000
    control_batch_size: int = 32
    control_lr: float = 1e-5
    p_drop_label: float = 0.5
    grid_rows: int = 8


class ControlledLDM(SafetensorsModule):
    """The base LDM (its EMA U-Net locked inside the ControlNet) and the control branch."""

    def __init__(self, cfg: Config, base: ldm.LDM | None = None):
        super().__init__()
        self.cfg = cfg
        self.ldm = base if base is not None else ldm.build(cfg)
        self.control = ControlNet(self.ldm.ema, 1, cfg.f, cfg.variant)

    def save(self, path: Path) -> None:  # the locked U-Net is held twice (ldm.ema, control.base): store copies
        save_file({k: v.detach().clone().contiguous() for k, v in self.state_dict().items()}, str(path))

    def num_parameters(self) -> int:
        return self.ldm.num_parameters() + self.control.trainable_parameters()

    def held_out_conditions(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = image_dataset(self.cfg.dataset, "test", self.cfg.image_size, self.cfg.data_root, n=n).tensors[:2]
        return canny_edges(x), y, x

    @torch.no_grad()
    def sample_conditioned(self, conditions: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                           steps: int, control: bool) -> torch.Tensor:
        device = self.ldm.diffusion.betas.device
        c, y = conditions.to(device), labels.to(device)
        eps = (lambda x, i: self.control(x, i, y, c)) if control else (lambda x, i: self.ldm.ema(x, i, y))
        shape = (len(y), self.ldm.latent_channels, self.ldm.latent_size, self.ldm.latent_size)
        z = ddim_sample(eps, self.ldm.diffusion, shape, steps, generator, device, self.cfg.ddim_eta)
        return to_unit(self.ldm.from_latent(z).cpu())


def build(cfg: Config) -> ControlledLDM:
    return ControlledLDM(cfg)


class _LogTo:
    """The run, its `log` replaced (the base's curve goes through `trained_once`)."""

    def __init__(self, run, log: Log):
        self._run, self.log = run, log

    def __getattr__(self, name: str):
        return getattr(self._run, name)


def trained_base(cfg: Config, run) -> ldm.LDM:
    """The locked base: `ldm.train` on the base's fields of the config. Every arm of a seed has
    the same base, so the first arm of a process trains it and the others take its weights and
    curve (bit-identical to training it again: the base trains in a random state of its own)."""
    base_fields = repr([(f.name, getattr(cfg, f.name)) for f in fields(ldm.Config)])
    state = trained_once(("controlnet-base", base_fields), run.seed, run.device,
                         lambda log: ldm.train(cfg, _LogTo(run, log)).state_dict(), run.log)
    with torch.random.fork_rng(devices=[run.device.index or 0] if run.device.type == "cuda" else []):
        base = ldm.build(cfg)
    base.load_state_dict(state)
    return base.to(run.device).eval()


def train(cfg: Config, run) -> ControlledLDM:
    if cfg.steps < 1:
        raise ValueError("controlnet: the base LDM needs a fixed number of steps (steps > 0)")
    base = trained_base(cfg, run)
    model = ControlledLDM(cfg, base).to(run.device)
    net = model.control
    gen = torch.Generator(device=run.device).manual_seed(run.seed + 10_000)
    x, y = image_dataset(cfg.dataset, "train", cfg.image_size, cfg.data_root, n=cfg.num_train).tensors[:2]
    conds = canny_edges(x).to(run.device)
    x, y = x.to(run.device) * 2.0 - 1.0, y.to(run.device)
    with torch.no_grad():
        if base.autoencoder is not None:
            moments = torch.cat([base.autoencoder.encoder(x[i:i + 500]) for i in range(0, len(x), 500)])
            mean, logvar = moments.chunk(2, dim=1)
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        else:
            mean, std = x, torch.zeros_like(x)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.control_lr)
    start = (cfg.ae_steps if cfg.f > 1 else 0) + cfg.steps
    run.progress(cfg.control_steps)
    net.train()
    loss_sum = 0.0
    for k in range(cfg.control_steps):
        idx = torch.randint(len(y), (cfg.control_batch_size,), generator=gen, device=gen.device).to(run.device)
        noise = torch.randn(mean[idx].shape, generator=gen, device=gen.device).to(run.device)
        z0 = (mean[idx] + std[idx] * noise) * base.scale_factor
        labels = y[idx]
        drop = torch.rand(len(labels), generator=gen, device=gen.device).to(run.device) < cfg.p_drop_label
        labels = torch.where(drop, torch.full_like(labels, base.model.null), labels)
        c = conds[idx]
        loss = base.diffusion.loss(lambda zt, i: net(zt, i, labels, c), z0, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item()
        if (k + 1) % cfg.log_every == 0 or k + 1 == cfg.control_steps:
            n = cfg.log_every if (k + 1) % cfg.log_every == 0 else (k + 1) % cfg.log_every
            run.log(start + k + 1, control_loss=loss_sum / n)
            loss_sum = 0.0
        run.advance()
    net.eval()
    save_figures(model, run.dir, run.seed)
    return model


def save_figures(model: ControlledLDM, folder: Path, seed: int) -> None:
    """control_samples.png: per row, a held-out condition (edges), a sample with it, and the base
    model's sample from the same noise and label without it."""
    conds, labels, _ = model.held_out_conditions(model.cfg.grid_rows)
    with_c = model.sample_conditioned(conds, labels, torch.Generator().manual_seed(seed), model.cfg.ddim_steps, True)
    without = model.sample_conditioned(conds, labels, torch.Generator().manual_seed(seed), model.cfg.ddim_steps, False)
    rows = torch.stack([conds.expand(-1, with_c.shape[1], -1, -1), with_c, without], dim=1).flatten(0, 1)
    save_grid(rows, Path(folder) / "control_samples.png", cols=3)


def data_fingerprint(cfg: Config) -> str:
    return ldm.data_fingerprint(cfg)


def required_data(cfg: Config) -> list[str]:
    return ldm.required_data(cfg)
