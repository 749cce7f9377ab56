"""ControlNet's full tier: the control branch of `control.py`'s eq. (1)-(2) on Stable Diffusion 1.5,
conditioned on ADE20K segmentations (the paper's Section 3.2 and 4, Tables 2 and 3).

- The base (not the paper's contribution) is Stable Diffusion 1.5 as diffusers lays it out in a local
  folder (`base_model`: unet/, vae/, text_encoder/, tokenizer/, scheduler/), loaded by diffusers and
  transformers from safetensors only (nothing unpickled) and locked: its UNet2DConditionModel, its
  KL-f8 autoencoder and its CLIP ViT-L/14 text encoder.
- The contribution, from scratch (`SDControlNet`): a trainable copy (copy.deepcopy) of the locked
  U-Net's input convolution, time embedding, 12 encoder outputs' blocks and middle block, fed
  z_t + Z(E(c); Theta_z1) (eq. 2: the condition encoder E of `control.py`, 4 x 4 convolutions of
  stride 2 down to the 64 x 64 latent size, then a zero convolution); each of the copy's 12 encoder
  outputs and its middle block go through a zero convolution Z(.; Theta_z2) (`control.zero_conv`,
  1 x 1, weight and bias zero) and are added to the locked U-Net's skip connections and middle block
  (diffusers' `down_block_additional_residuals` / `mid_block_additional_residual`), so that at
  initialisation the output is the locked model's exactly (tested). `lite` is the paper's
  ControlNet-lite (Table 2): one convolution per joined feature from E(c), no trainable copy.
- Training (Section 3.3): L_simple, eq. (5), on the latents of ADE20K training images with the
  condition their colour-coded label map; 50% of the prompts replaced by the empty string; AdamW at
  lr 1e-5 on the control branch alone.
- Sampling (Section 4): DDIM (the base's own noise schedule) with classifier-free guidance at scale 9,
  the condition given to both the conditional and the unconditional (empty prompt) prediction.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from evals.contract import SafetensorsModule
from evals.tasks import ade20k
from reproductions.common.training import restore, snapshot
from reproductions.controlnet.control import ConditionEncoder, zero_conv

VARIANTS = ("full", "lite")
BASE_FILES = ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
              "text_encoder/model.safetensors", "scheduler/scheduler_config.json")


@dataclass
class Config:
    base_model: str = "data/controlnet/stable-diffusion-v1-5"   # diffusers layout, safetensors
    data_root: str = "data/ade20k/ADEChallengeData2016"         # evals/tasks/ade20k.py's layout
    captions: str = ""                  # JSON {image name: caption}; empty: class-name prompts
    variant: str = "full"               # full (trainable copy) or lite (one convolution per joined feature)
    image_size: Annotated[int, Field(ge=64)] = 512
    steps: Annotated[int, Field(gt=0)] = 20_000         # optimiser steps
    batch_size: Annotated[int, Field(gt=0)] = 4         # per micro-batch
    grad_accum: Annotated[int, Field(gt=0)] = 16        # micro-batches per step: 64 images a step
    lr: Annotated[float, Field(gt=0)] = 1e-5            # Section 4; AdamW as the authors' code
    weight_decay: Annotated[float, Field(ge=0)] = 0.01  # torch's AdamW default, as the authors' code
    p_drop_prompt: Annotated[float, Field(ge=0, le=1)] = 0.5
    mixed_precision: bool = True        # bf16 autocast on CUDA (the locked base and the branch alike)
    n_train: Annotated[int, Field(ge=0)] = 0            # 0: every training pair
    workers: Annotated[int, Field(gt=0)] = 8            # threads reading images
    log_every: Annotated[int, Field(gt=0)] = 50


def skip_shapes(unet) -> list[tuple[int, int]]:
    """(channels, downsampling) of each residual UNet2DConditionModel's down pass keeps for a skip
    connection, in its order: conv_in's, each resnet's, each downsampler's (12 for SD 1.5)."""
    out, ds = [(unet.config.block_out_channels[0], 1)], 1
    for block in unet.down_blocks:
        for resnet in block.resnets:
            out.append((resnet.out_channels, ds))
        for down in block.downsamplers or []:
            ds *= 2
            out.append((down.out_channels, ds))
    return out


class SDControlNet(nn.Module):
    """The control branch for a UNet2DConditionModel: `forward` gives the residuals for its skip
    connections and its middle block."""

    def __init__(self, unet, variant: str = "full", cond_channels: int = 3, f: int = 8):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"controlnet: variant {variant!r} not in {VARIANTS}")
        self.variant = variant
        ch0, mid_ch = unet.config.block_out_channels[0], unet.config.block_out_channels[-1]
        self.skips = skip_shapes(unet)
        self.hint = ConditionEncoder(cond_channels, ch0, f)                 # E(c), Section 3.2
        self.hint_zero = zero_conv(ch0, ch0)                                 # Z(.; Theta_z1)
        self.out_zero = nn.ModuleList(zero_conv(c, c) for c, _ in self.skips)  # Z(.; Theta_z2), one per skip
        self.mid_zero = zero_conv(mid_ch, mid_ch)
        if variant == "lite":
            self.lite = nn.ModuleList(nn.Conv2d(ch0, c, 3, padding=1) for c, _ in self.skips)
            self.lite_mid = nn.Conv2d(ch0, mid_ch, 3, padding=1)
        else:  # the trainable copy Theta_c of the encoder and middle block, initialised from the base
            self.time_proj = copy.deepcopy(unet.time_proj)
            self.time_embedding = copy.deepcopy(unet.time_embedding)
            self.conv_in = copy.deepcopy(unet.conv_in)
            self.down_blocks = copy.deepcopy(unet.down_blocks)
            self.mid_block = copy.deepcopy(unet.mid_block)
            self.requires_grad_(True)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                cond: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        hint = self.hint_zero(self.hint(cond))
        if self.variant == "lite":
            pool = lambda ds: F.avg_pool2d(hint, ds) if ds > 1 else hint  # noqa: E731
            feats = [conv(pool(ds)) for conv, (_, ds) in zip(self.lite, self.skips)]
            mid = self.lite_mid(pool(self.skips[-1][1]))
        else:
            t = timestep.reshape(-1).expand(sample.shape[0]).to(sample.device)
            emb = self.time_embedding(self.time_proj(t).to(sample.dtype))
            h = self.conv_in(sample) + hint                                   # z_t + Z(E(c); Theta_z1)
            feats = [h]
            for block in self.down_blocks:
                if getattr(block, "has_cross_attention", False):
                    h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=text)
                else:
                    h, res = block(hidden_states=h, temb=emb)
                feats += list(res)
            if getattr(self.mid_block, "has_cross_attention", False):
                mid = self.mid_block(h, emb, encoder_hidden_states=text)
            else:
                mid = self.mid_block(h, emb)
        return [z(x) for z, x in zip(self.out_zero, feats)], self.mid_zero(mid)


def load_base(folder: str):
    """(unet, vae, text_encoder, tokenizer, scheduler config) from a diffusers-layout folder, safetensors only."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    return unet, vae, text_encoder, tokenizer, scheduler


class ControlledStableDiffusion(SafetensorsModule):
    """Stable Diffusion locked, with the control branch; saves and loads the branch alone (the base
    is read from `base_model` by `build`)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.unet, self.vae, self.text_encoder, self.tokenizer, self.scheduler = load_base(cfg.base_model)
        for m in (self.unet, self.vae, self.text_encoder):
            m.requires_grad_(False).eval()
        self.f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.control = SDControlNet(self.unet, cfg.variant, 3, self.f)

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.control.state_dict().items()}, str(path))

    def load(self, path: Path) -> "ControlledStableDiffusion":
        from safetensors.torch import load_file

        self.control.load_state_dict(load_file(str(path), device=str(self.device)))
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.control.parameters() if p.requires_grad)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(prompts, padding="max_length", truncation=True,
                             max_length=self.text_encoder.config.max_position_embeddings, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    @torch.no_grad()
    def to_latents(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        dist = self.vae.encode(images.to(self.device) * 2 - 1).latent_dist
        return dist.sample(generator) * self.vae.config.scaling_factor

    def forward(self, z: torch.Tensor, t: torch.Tensor, text: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps(z_t, t, c_t, c_f): the locked U-Net with the branch's residuals."""
        res, mid = self.control(z, t, text, cond)
        return self.unet(z, t, encoder_hidden_states=text, down_block_additional_residuals=res,
                         mid_block_additional_residual=mid).sample

    def loss(self, images: torch.Tensor, labels: torch.Tensor, prompts: list[str], gen: torch.Generator) -> torch.Tensor:
        """L_simple (eq. 5) on one batch; the prompts already dropped."""
        z0 = self.to_latents(images, gen)
        noise = torch.randn(z0.shape, generator=gen, device=gen.device).to(self.device)
        t = torch.randint(self.scheduler.config.num_train_timesteps, (len(z0),), generator=gen,
                          device=gen.device).to(self.device)
        zt = self.scheduler.add_noise(z0, noise, t)
        target = noise if self.scheduler.config.prediction_type == "epsilon" else self.scheduler.get_velocity(z0, noise, t)
        cond = ade20k.colorize(labels.to(self.device))
        return F.mse_loss(self(zt, t, self.encode_prompts(prompts), cond).float(), target.float())

    @torch.no_grad()
    def sample_from_segmentation(self, labels: torch.Tensor, prompts: list[str], generator: torch.Generator,
                                 steps: int, guidance: float) -> torch.Tensor:
        """The `SegmentationSampler` capability: DDIM (eta 0) with classifier-free guidance,
        eps = eps(z, "") + s (eps(z, prompt) - eps(z, "")), the condition in both."""
        from diffusers import DDIMScheduler

        self.eval()
        ddim = DDIMScheduler.from_config(self.scheduler.config)
        ddim.set_timesteps(steps, device=self.device)
        n, (h, w) = len(labels), labels.shape[-2:]
        z = torch.randn((n, self.unet.config.in_channels, h // self.f, w // self.f), generator=generator)
        z = z.to(self.device) * ddim.init_noise_sigma
        cond = ade20k.colorize(labels.to(self.device))
        text = torch.cat([self.encode_prompts([""] * n), self.encode_prompts(prompts)])
        with self._autocast():
            for t in ddim.timesteps:
                x = ddim.scale_model_input(torch.cat([z, z]), t)
                eps_u, eps_c = self(x, t, text, torch.cat([cond, cond])).float().chunk(2)
                z = ddim.step(eps_u + guidance * (eps_c - eps_u), t, z, eta=0.0).prev_sample
            images = self.vae.decode(z / self.vae.config.scaling_factor).sample.float()
        return ((images + 1) / 2).clamp(0, 1)

    def _autocast(self):
        on = self.cfg.mixed_precision and self.device.type == "cuda"
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=on)


def build(cfg: Config) -> ControlledStableDiffusion:
    return ControlledStableDiffusion(cfg)


def _drop(prompts: list[str], p: float, gen: torch.Generator) -> list[str]:
    """Section 3.3: each prompt replaced by the empty string with probability p."""
    keep = torch.rand(len(prompts), generator=gen, device=gen.device) >= p
    return [s if k else "" for s, k in zip(prompts, keep.tolist())]


def train(cfg: Config, run) -> ControlledStableDiffusion:
    model = build(cfg).to(run.device)
    names = ade20k.names(cfg.data_root, "training", cfg.n_train)
    captions = ade20k.load_captions(cfg.captions)
    params = [p for p in model.control.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=run.device).manual_seed(run.seed + 10_000)
    parts, step = {"control": model.control, "opt": opt, "gen": gen}, 0
    if (state := run.resume_state()) is not None:
        step = restore(state, parts)["step"]
    read = lambda name: ade20k.read_pair(cfg.data_root, "training", name, cfg.image_size, captions)  # noqa: E731
    run.progress(cfg.steps)
    model.control.train()
    with ThreadPoolExecutor(cfg.workers) as pool:
        while step < cfg.steps:
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(cfg.grad_accum):
                idx = torch.randint(len(names), (cfg.batch_size,), generator=gen, device=gen.device).tolist()
                pairs = list(pool.map(read, [names[i] for i in idx]))
                images = torch.stack([p.image for p in pairs]).to(run.device)
                labels = torch.stack([p.labels for p in pairs])
                prompts = _drop([p.prompt for p in pairs], cfg.p_drop_prompt, gen)
                with model._autocast():
                    loss = model.loss(images, labels, prompts, gen) / cfg.grad_accum
                loss.backward()
                total += loss.item()
            opt.step()
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                run.log(step, loss=total)
            run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
            run.advance()
    model.control.eval()
    save_figures(model, cfg, run.dir, run.seed)
    return model


@torch.no_grad()
def save_figures(model: ControlledStableDiffusion, cfg: Config, folder: Path, seed: int, rows: int = 4,
                 side: int = 192) -> None:
    """control_samples.png: per row, a validation label map (painted), the sample drawn from it
    (DDIM 20 steps, guidance 9) and the real image, at `side` pixels."""
    from reproductions.ddpm.ddpm import save_grid

    captions = ade20k.load_captions(cfg.captions)
    pairs = [ade20k.read_pair(cfg.data_root, "validation", n, cfg.image_size, captions)
             for n in ade20k.names(cfg.data_root, "validation", rows)]
    labels = torch.stack([p.labels for p in pairs])
    drawn = model.sample_from_segmentation(labels, [p.prompt for p in pairs], torch.Generator().manual_seed(seed), 20, 9.0)
    tiles = torch.stack([ade20k.colorize(labels), drawn.float().cpu(), torch.stack([p.image for p in pairs])], dim=1)
    tiles = F.interpolate(tiles.flatten(0, 1), size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    save_grid(tiles.clamp(0, 1), Path(folder) / "control_samples.png", cols=3)


def dry_run_step(model: ControlledStableDiffusion, cfg: Config) -> dict[str, float]:
    """One AdamW step of the branch on the first two training pairs at an eighth of the tier's side
    (at least 64 pixels; every network is convolutional or attends at any size)."""
    side = max(64, cfg.image_size // 8)
    pairs = [ade20k.read_pair(cfg.data_root, "training", n, side, ade20k.load_captions(cfg.captions))
             for n in ade20k.names(cfg.data_root, "training", 2)]
    gen = torch.Generator().manual_seed(0)
    params = [p for p in model.control.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.control.train()
    loss = model.loss(torch.stack([p.image for p in pairs]), torch.stack([p.labels for p in pairs]),
                      _drop([p.prompt for p in pairs], cfg.p_drop_prompt, gen), gen)
    loss.backward()
    grad = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None)).item()
    opt.step()
    model.control.eval()
    return {"loss": loss.item(), "grad_norm": grad, "trainable_parameters": float(model.trainable_parameters())}


def required_data(cfg: Config) -> list[str]:
    base = Path(cfg.base_model)
    missing = [f"Stable Diffusion 1.5: no file {base / f} (the diffusers-layout folder of the Hugging Face repository "
               f"stable-diffusion-v1-5/stable-diffusion-v1-5: unet/, vae/, text_encoder/, tokenizer/, scheduler/, "
               f"safetensors weights only)" for f in BASE_FILES if not (base / f).is_file()]
    if not (base / "tokenizer").is_dir():
        missing.append(f"Stable Diffusion 1.5: no folder {base / 'tokenizer'} (CLIP's tokenizer files)")
    return missing + ade20k.missing(cfg.data_root, captions=cfg.captions)


def data_fingerprint(cfg: Config) -> str:
    return f"ade20k training under {cfg.data_root}: {ade20k.fingerprint(cfg.data_root)}"
