"""The dry run's stand-ins for the full tier (imported by `repro reproduce --dry-run` and the tests,
never by a run): a tiny Stable Diffusion the project builds, in the diffusers layout of
stable-diffusion-v1-5 (a UNet2DConditionModel with 2 levels of 32 and 64 channels, cross-attention
at the first; an f = 8 AutoencoderKL of 8 channels; a 1-layer CLIP text encoder of width 32; a
byte-level CLIP tokenizer; SD 1.5's noise schedule), every weight saved by diffusers / transformers
in safetensors, randomly initialised; and a tiny ADE20K tree (evals/tasks/ade20k_stand_ins.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from evals.tasks.ade20k_stand_ins import clip_tokenizer, write_ade20k
from evals.tasks.stand_ins import image_data
from reproductions.controlnet.stable_diffusion import Config, required_data

TEXT_WIDTH = 32


def write_tiny_stable_diffusion(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny Stable Diffusion in diffusers' folder layout; returns `folder`."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder.mkdir(parents=True, exist_ok=True)
    tok = clip_tokenizer()
    tok.save_pretrained(folder / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=TEXT_WIDTH, intermediate_size=37,
                                     num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                     projection_dim=TEXT_WIDTH, bos_token_id=0, eos_token_id=1, pad_token_id=1)
                      ).save_pretrained(folder / "text_encoder", safe_serialization=True)
        UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_WIDTH,
                             attention_head_dim=8, norm_num_groups=8).save_pretrained(folder / "unet", safe_serialization=True)
        AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                      up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                      latent_channels=4, norm_num_groups=8, sample_size=64).save_pretrained(folder / "vae", safe_serialization=True)
    # Stable Diffusion 1.5's schedule (its scheduler_config.json)
    DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False, set_alpha_to_one=False, steps_offset=1).save_pretrained(folder / "scheduler")
    return folder


def stand_in_data(cfg, folder: Path):
    if not isinstance(cfg, Config):   # the LDM-based tiers' configs (package module): image data only
        return image_data(cfg, folder)
    missing = required_data(cfg)
    changes = {}
    if any(m.startswith("Stable Diffusion") for m in missing):
        changes["base_model"] = str(write_tiny_stable_diffusion(folder / "stable-diffusion"))
    if any(m.startswith("ADE20K") for m in missing):
        changes["data_root"] = str(write_ade20k(folder / "ade20k"))
        changes["captions"] = ""
    return dataclasses.replace(cfg, **changes)
