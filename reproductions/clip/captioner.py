"""The caption-prediction baseline of CLIP's Figure 2: the same image encoder and text Transformer
trained to predict the caption's words instead of matching images to captions.

"Our initial approach, similar to VirTex, jointly trained an image CNN and text transformer from
scratch to predict the caption of an image" (Section 2.3). Here the image's ViT features, mapped
to the text width, take the place of the start token, and the GPT predicts each caption word from
the image and the words before it (next-token cross-entropy, padding ignored).

Zero-shot transfer from a captioner scores each class by how likely the model finds its prompt:
the summed log-probability of the prompt's words given the image; an ensemble of prompts averages
these log-likelihoods over the class's prompts. Same `Config`, data, optimiser and steps as
`clip.py`: only the objective differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evals.tasks.captioned_shapes import EOT, PAD, WORD_ID, tokenize
from reproductions.clip.clip import (Config, TiedSafetensors, dry_run_step, fit, hidden_states, image_encoder,
                                     text_encoder)

__all__ = ["Config", "Captioner", "build", "train", "dry_run_step"]


class Captioner(TiedSafetensors):
    def __init__(self, cfg: Config):
        super().__init__()
        self.visual = image_encoder(cfg, cfg.text_width)  # the image as the text's first token
        self.text = text_encoder(cfg)

    def next_token_logits(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """B x T x vocab: position j predicts token j + 1 of `tokens` given the image."""
        return self.text.lm_head(hidden_states(self.text, tokens, first=self.visual(images)))

    def training_loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.next_token_logits(images, tokens)[:, :-1]
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=WORD_ID[PAD])

    @torch.no_grad()
    def zero_shot_logits(self, images: torch.Tensor, prompts: list[list[str]]) -> torch.Tensor:
        """N x classes: the mean over a class's prompts of log p(prompt words | image)."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            n, n_classes, n_prompts = len(images), len(prompts), len(prompts[0])
            tokens = tokenize([t for per_class in prompts for t in per_class]).to(device)  # K x T
            k = len(tokens)
            prefix = self.visual(images.to(device))                                       # N x width
            pairs = tokens.repeat(n, 1)                                                   # (N K) x T
            h = hidden_states(self.text, pairs, first=prefix.repeat_interleave(k, dim=0))
            logp = torch.log_softmax(self.text.lm_head(h[:, :-1]), dim=-1)
            target = pairs[:, 1:]
            words = (target != WORD_ID[PAD]) & (target != WORD_ID[EOT])
            token_logp = logp.gather(-1, target[..., None])[..., 0] * words
            return token_logp.sum(-1).view(n, n_classes, n_prompts).mean(-1)
        finally:
            self.train(was_training)


def build(cfg: Config) -> Captioner:
    return Captioner(cfg)


def train(cfg: Config, run) -> Captioner:
    return fit(build(cfg).to(run.device), cfg, run)
