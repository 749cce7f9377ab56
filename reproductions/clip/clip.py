"""CLIP: contrastive language-image pre-training (Radford et al., arXiv 2103.00020).

The paper's method, top to bottom, as its Figure 3 writes it in numpy-like pseudo-code:

    I_f = image_encoder(I)                      # [n, d_i]  our ViT (reproductions/vit), y of its eq. (4)
    T_f = text_encoder(T)                       # [n, d_t]  our GPT (reproductions/transformer), at [EOS]
    I_e = l2_normalize(np.dot(I_f, W_i), axis=1)  # joint multimodal embedding [n, d_e]
    T_e = l2_normalize(np.dot(T_f, W_t), axis=1)
    logits = np.dot(I_e, T_e.T) * np.exp(t)     # scaled pairwise cosine similarities [n, n]
    labels = np.arange(n)
    loss_i = cross_entropy_loss(logits, labels, axis=0)
    loss_t = cross_entropy_loss(logits, labels, axis=1)
    loss   = (loss_i + loss_t) / 2              # symmetric InfoNCE: `clip_loss`

- The temperature t is learned, initialised to 0.07 (log-parametrised), and the logit scale
  exp(t) "clipped to prevent scaling the logits by more than 100" (Section 2.5): `logit_scale`.
- The text encoder is a causal (masked self-attention) Transformer; the features of its last
  layer's LayerNorm at the [EOS] token are the text's representation (Section 2.4).
- Zero-shot transfer (Section 3.1.2): each class's name, put in a prompt, is embedded by the
  text encoder; the normalised text embeddings are the weights of a linear classifier over the
  normalised image embedding, scaled by the logit scale: `zero_shot_weights`, `zero_shot_logits`.
- Prompt ensembling (Section 3.1.4): several prompts per class, their normalised embeddings
  averaged ("in embedding space instead of probability space") and normalised again.

Training (Section 2.5): Adam with decoupled weight decay on all weights but gains and biases,
cosine learning-rate schedule after a warm-up, no data augmentation but a random crop (none here:
the generated images are already the input size). `Config`'s defaults are the paper's ViT-B/32
(Tables 19-20): width 768, 12 layers, patch 32 at 224 pixels; a 12-layer 512-wide text encoder
with 8 heads; embedding dimension 512; batch 32,768; learning rate 5e-4; weight decay 0.2; Adam
beta2 0.98, epsilon 1e-6; 2,000 warm-up steps; 32 epochs of 400M pairs.

The tiers train on generated captioned shapes (`evals.tasks.captioned_shapes`) with classes held
out from every training caption, and score zero-shot transfer to them (`evals/evaluators/zero_shot.py`).
`captioner.py` is the paper's Figure 2 baseline (predict the caption's words, same encoders);
`open_clip_baseline.py` the peer arm (open_clip's CLIP and ClipLoss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_model, save_model

from evals.contract import SafetensorsModule
from evals.tasks.captioned_shapes import CONTEXT_LENGTH, VOCAB, make_captioned_shapes, tokenize
from reproductions.common.training import restore, snapshot
from reproductions.transformer.gpt import GPT, GPTConfig
from reproductions.vit.classify import StepBatches, learning_rate, param_groups
from reproductions.vit.model import ViT


@dataclass
class Config:
    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 768       # ViT-B/32 (Table 20)
    vision_layers: int = 12
    vision_heads: int = 12
    text_width: int = 512         # the text Transformer (Section 2.4, Table 20)
    text_layers: int = 12
    text_heads: int = 8
    embed_dim: int = 512          # d_e, the joint embedding
    n_train: int = 20_000         # captioned images drawn for training (the paper: 400M pairs)
    steps: int = 390_625          # 32 epochs of 400M pairs at batch 32,768
    batch_size: int = 32_768      # n of Figure 3
    lr: float = 5e-4
    weight_decay: float = 0.2
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 2_000
    init_temperature: float = 0.07  # t = log(1 / 0.07) at the start (Section 2.5)
    max_logit_scale: float = 100.0  # exp(t) clipped at 100
    grad_clip: float = 0.0          # 0: none (the paper clips nothing)
    log_every: int = 100


# -- the objective (Figure 3) ------------------------------------------------------------------
def clip_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Figure 3's symmetric cross-entropy over the scaled cosine similarities of a batch of n
    matching (image, text) pairs: pair i is the positive of row i and of column i."""
    i_e = F.normalize(image_embeddings, dim=-1)
    t_e = F.normalize(text_embeddings, dim=-1)
    logits = logit_scale * i_e @ t_e.T                    # [n, n]
    labels = torch.arange(len(logits), device=logits.device)
    loss_i = F.cross_entropy(logits, labels)              # each image against every text
    loss_t = F.cross_entropy(logits.T, labels)            # each text against every image
    return (loss_i + loss_t) / 2


# -- zero-shot transfer (Sections 3.1.2, 3.1.4) -------------------------------------------------
def zero_shot_weights(text_embeddings: torch.Tensor) -> torch.Tensor:
    """Classes x prompts x d_e text embeddings -> the classifier's weights, classes x d_e: each
    prompt's embedding normalised, averaged over the class's prompts, normalised again (one
    prompt: its normalised embedding)."""
    return F.normalize(F.normalize(text_embeddings, dim=-1).mean(1), dim=-1)


class ContrastiveZeroShot:
    """Zero-shot classification for any model with `encode_image(images)` and `encode_text(tokens)`
    (unnormalised joint embeddings) and a `logit_scale()`: our CLIP and the open_clip arm alike."""

    @torch.no_grad()
    def zero_shot_logits(self, images: torch.Tensor, prompts: list[list[str]]) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            n_prompts = len(prompts[0])
            if any(len(p) != n_prompts for p in prompts):
                raise ValueError("zero_shot_logits: every class needs the same number of prompts")
            tokens = tokenize([text for per_class in prompts for text in per_class]).to(device)
            weights = zero_shot_weights(self.encode_text(tokens).view(len(prompts), n_prompts, -1))
            image = F.normalize(self.encode_image(images.to(device)), dim=-1)
            return self.logit_scale() * image @ weights.T
        finally:
            self.train(was_training)


# -- the model -----------------------------------------------------------------------------------
OUTPUT_PROJECTIONS = ("w_o", "w_2", "attn.proj", "mlp.3")   # GPT's and ViT's names
FIRST_FFN_LAYERS = ("w_1", "mlp.0")


def clip_init(blocks: nn.Module, width: int, layers: int) -> None:
    """CLIP's initialisation of a Transformer's blocks (its released code, `initialize_parameters`):
    attention inputs N(0, width^-1/2), the MLP's first layer N(0, (2 width)^-1/2), the residual
    output projections N(0, width^-1/2 (2 layers)^-1/2). GPT-2's and ViT's fixed std 0.02 is that
    scale at width 768-2500; at width 64 it leaves the [EOS] and class tokens blind to the other
    tokens at the start, and the contrastive loss sat at log n (every embedding alike)."""
    for name, m in blocks.named_modules():
        if isinstance(m, nn.Linear):
            if name.endswith(OUTPUT_PROJECTIONS):
                std = width ** -0.5 * (2 * layers) ** -0.5
            elif name.endswith(FIRST_FFN_LAYERS):
                std = (2 * width) ** -0.5
            else:
                std = width ** -0.5
            nn.init.normal_(m.weight, std=std)


def image_encoder(cfg: Config, out_dim: int) -> ViT:
    """Our ViT, its head replaced by a bias-free linear map of y (eq. 4) to `out_dim` (W_i), with
    CLIP's initialisation (class token and position embeddings N(0, width^-1/2))."""
    vit = ViT(cfg.image_size, cfg.patch_size, 3, out_dim, cfg.vision_width, cfg.vision_layers, cfg.vision_heads,
              4 * cfg.vision_width, dropout=0.0, head_hidden=0, pool="cls")
    vit.head = nn.Linear(cfg.vision_width, out_dim, bias=False)
    clip_init(vit.blocks, cfg.vision_width, cfg.vision_layers)
    for p in (vit.head.weight, vit.cls_token, vit.pos_embed):
        nn.init.normal_(p, std=cfg.vision_width ** -0.5)
    nn.init.normal_(vit.patch_embed.weight, std=vit.patch_embed.in_features ** -0.5)
    return vit


def text_encoder(cfg: Config) -> GPT:
    """Our GPT (learned positions, causal attention) over the task's word vocabulary, with CLIP's
    initialisation (token embeddings N(0, 0.02), positions N(0, 0.01))."""
    gpt = GPT(GPTConfig(vocab_size=len(VOCAB), block_size=CONTEXT_LENGTH, n_layer=cfg.text_layers,
                        n_head=cfg.text_heads, n_embd=cfg.text_width, bias=True))
    clip_init(gpt.blocks, cfg.text_width, cfg.text_layers)
    nn.init.normal_(gpt.position.wpe.weight, std=0.01)
    return gpt


def hidden_states(gpt: GPT, tokens: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """The GPT's last-layer states after its final LayerNorm, B x T x width (its forward without
    the language-model head). `first`, B x width, replaces the embedding of the first token (the
    captioner's image prefix)."""
    positions = torch.arange(tokens.size(1), device=tokens.device)
    x = gpt.wte(tokens)
    if first is not None:
        x = torch.cat([first[:, None], x[:, 1:]], dim=1)
    x = gpt.drop(gpt.position.embed(x, positions))
    rotate = partial(gpt.position.rotate, positions=positions)
    for block in gpt.blocks:
        x = block(x, rotate)
    return gpt.ln_f(x)


class TiedSafetensors(SafetensorsModule):
    """Saved with safetensors' `save_model`, which stores the GPT's tied embedding once."""

    def save(self, path: Path) -> None:
        save_model(self, str(path))

    def load(self, path: Path) -> "TiedSafetensors":
        load_model(self, str(path), device=str(next(self.parameters()).device))
        return self


class CLIP(ContrastiveZeroShot, TiedSafetensors):
    def __init__(self, cfg: Config):
        super().__init__()
        self.visual = image_encoder(cfg, cfg.embed_dim)                               # image_encoder, W_i
        self.text = text_encoder(cfg)                                                 # text_encoder
        self.text_projection = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)   # W_t
        nn.init.normal_(self.text_projection.weight, std=cfg.text_width ** -0.5)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))  # t
        self.max_log_scale = math.log(cfg.max_logit_scale)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """I_f W_i, unnormalised: images N x 3 x H x W in [0, 1]."""
        return self.visual(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """T_f W_t, unnormalised: T_f the last layer's state at [EOS] (the largest token id)."""
        h = hidden_states(self.text, tokens)
        return self.text_projection(h[torch.arange(len(tokens), device=tokens.device), tokens.argmax(-1)])

    def logit_scale(self) -> torch.Tensor:
        """exp(t), clipped at 100 (Section 2.5); no gradient reaches t above the clip."""
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def training_loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return clip_loss(self.encode_image(images), self.encode_text(tokens), self.logit_scale())

    def log_values(self) -> dict[str, float]:
        return {"logit_scale": self.logit_scale().item()}


def build(cfg: Config) -> CLIP:
    return CLIP(cfg)


# -- training (Section 2.5), shared by every arm ---------------------------------------------------
def training_pairs(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images and their tokenised captions (seen classes only)."""
    data = make_captioned_shapes(cfg.n_train, cfg.image_size, split="train")
    return data.images, tokenize(data.captions)


def fit(model: nn.Module, cfg: Config, run) -> nn.Module:
    """`cfg.steps` AdamW steps of `model.training_loss(images, tokens)` on batches that are a pure
    function of (seed, step); `model.after_step()`, if any, runs after each optimiser step."""
    images, tokens = training_pairs(cfg)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2), eps=cfg.eps)
    parts, step = {"model": model, "opt": opt}, 0
    if (state := run.resume_state()) is not None:
        step = restore(state, parts)["step"]
    run.progress(cfg.steps)
    model.train()
    loss_sum, seen = 0.0, 0
    for idx in StepBatches(len(images), cfg.batch_size, run.seed, step):
        if step >= cfg.steps:
            break
        # ALGO LOGIC
        lr = learning_rate(step, cfg.lr, cfg.warmup_steps, cfg.steps, "cosine")
        for group in opt.param_groups:
            group["lr"] = lr
        loss = model.training_loss(images[idx].to(run.device), tokens[idx].to(run.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if hasattr(model, "after_step"):
            model.after_step()
        # TRY NOT TO MODIFY: logging, checkpoints
        step += 1
        loss_sum, seen = loss_sum + loss.item(), seen + 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            extra = model.log_values() if hasattr(model, "log_values") else {}
            run.log(step, loss=loss_sum / seen, lr=lr, **extra)
            loss_sum, seen = 0.0, 0
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
        run.advance()
    model.eval()
    return model


def train(cfg: Config, run) -> CLIP:
    return fit(build(cfg).to(run.device), cfg, run)


def dry_run_step(model: nn.Module, cfg: Config) -> dict[str, float]:
    """One optimisation step on 4 training pairs."""
    data = make_captioned_shapes(4, cfg.image_size, split="train")
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2), eps=cfg.eps)
    loss = model.training_loss(data.images.to(device), tokenize(data.captions).to(device))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {"loss": loss.item()}


def data_fingerprint(cfg: Config) -> str:
    data = make_captioned_shapes(cfg.n_train, cfg.image_size, split="train")
    return f"captioned_shapes train n={cfg.n_train} size={cfg.image_size}: {data.fingerprint()}"
