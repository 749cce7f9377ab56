"""The full tier: zero-shot ImageNet of OpenAI's released CLIP weights, read from a local
safetensors file in open_clip's layout (never unpickled), scored by the paper's zero-shot method.

Nothing is trained: `train` loads the checkpoint. The architecture is open_clip's (`model`: an
open_clip model name such as `ViT-B-32-quickgelu`, OpenAI's ViT-B/32 with its QuickGELU, or the
path of a JSON file of the same form: embed_dim, vision_cfg, text_cfg). Text is tokenised by
CLIP's byte-pair encoder (open_clip's `SimpleTokenizer`, which ships its vocabulary), images are
normalised with CLIP's mean and standard deviation, and zero-shot classification is
`clip.zero_shot_weights`: each class's prompts embedded, normalised, averaged, normalised again
(Sections 3.1.2 and 3.1.4). The class weights are computed once per prompt set and kept.

The checkpoint is the open_clip `open_clip_model.safetensors` of the Hugging Face repository
`timm/vit_base_patch32_clip_224.openai` (what open_clip loads for `ViT-B-32`, pretrained `openai`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from evals.contract import SafetensorsModule
from evals.tasks.image_loaders import missing_data
from reproductions.clip.clip import zero_shot_weights

__all__ = ["Config", "PretrainedCLIP", "build", "train", "required_data", "model_config"]


@dataclass
class Config:
    model: str = "ViT-B-32-quickgelu"                       # open_clip model name, or a JSON config's path
    checkpoint: str = "data/clip/vit_base_patch32_clip_224.openai/open_clip_model.safetensors"
    data_root: str = "data/imagenet"                       # ImageNet-1k: val/<class>/*.JPEG
    image_size: int = 224
    text_batch: int = 1000                                 # prompts embedded at once


def model_config(cfg: Config) -> dict:
    import open_clip

    if cfg.model.endswith(".json"):
        return json.loads(Path(cfg.model).read_text())
    found = open_clip.get_model_config(cfg.model)
    if found is None:
        raise ValueError(f"config field 'model': {cfg.model!r} is neither an open_clip model nor a .json file")
    return found


class PretrainedCLIP(SafetensorsModule):
    def __init__(self, cfg: Config):
        super().__init__()
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from open_clip.model import CLIP as OpenCLIP
        from open_clip.tokenizer import SimpleTokenizer

        arch = model_config(cfg)
        self.model = OpenCLIP(**arch)
        self.tokenizer = SimpleTokenizer(context_length=arch["text_cfg"].get("context_length", 77))
        self.register_buffer("mean", torch.tensor(OPENAI_DATASET_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_DATASET_STD)[:, None, None], persistent=False)
        self.text_batch = cfg.text_batch
        self._weights: dict[int, tuple[list[list[str]], torch.Tensor]] = {}

    def load(self, path: Path) -> "PretrainedCLIP":
        self.model.load_state_dict(load_file(str(path)))
        self._weights.clear()
        return self

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(path))

    @torch.no_grad()
    def class_weights(self, prompts: list[list[str]]) -> torch.Tensor:
        """Classes x d_e: the zero-shot classifier of these prompts, computed once."""
        key = hash(tuple(map(tuple, prompts)))
        if key in self._weights and self._weights[key][0] == prompts:
            return self._weights[key][1]
        device = self.mean.device
        texts = [t for per_class in prompts for t in per_class]
        embedded = torch.cat([self.model.encode_text(self.tokenizer(texts[i:i + self.text_batch]).to(device)).float()
                              for i in range(0, len(texts), self.text_batch)])
        weights = zero_shot_weights(embedded.view(len(prompts), len(prompts[0]), -1))
        self._weights[key] = (prompts, weights)
        return weights

    @torch.no_grad()
    def zero_shot_logits(self, images: torch.Tensor, prompts: list[list[str]]) -> torch.Tensor:
        self.eval()
        weights = self.class_weights(prompts)
        x = (images.to(self.mean.device) - self.mean) / self.std
        image = F.normalize(self.model.encode_image(x).float(), dim=-1)
        return self.model.logit_scale.exp().float() * image @ weights.T


def build(cfg: Config) -> PretrainedCLIP:
    return PretrainedCLIP(cfg)


def train(cfg: Config, run) -> PretrainedCLIP:
    """No training: the released weights, loaded from safetensors."""
    if not Path(cfg.checkpoint).is_file():
        raise FileNotFoundError(f"config field 'checkpoint': no file {cfg.checkpoint}")
    return build(cfg).load(Path(cfg.checkpoint)).to(run.device).eval()


def required_data(cfg: Config) -> list[str]:
    missing = []
    if not Path(cfg.checkpoint).is_file():
        missing.append(f"CLIP weights: no file {cfg.checkpoint} (open_clip_model.safetensors of the Hugging Face "
                       f"repository timm/vit_base_patch32_clip_224.openai)")
    return missing + missing_data("imagenet", cfg.data_root)
