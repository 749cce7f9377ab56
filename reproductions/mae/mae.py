"""Masked Autoencoders (He et al., arXiv 2111.06377): the paper module the harness loads.

Section 3 of the paper, top to bottom:
- masking: the image is cut into patches (the ViT's), and a random 75% of them is removed, by a
  per-sample random shuffle that keeps the first 25% (`random_masking`);
- the encoder is a ViT (reproductions/vit) applied to the visible patches only, with their
  position embeddings and the class token (the "auxiliary dummy token", Appendix A.1);
- the decoder is a small Transformer on the full set: the encoded visible tokens, and a shared
  learned mask token at every removed position, put back in the original order, plus position
  embeddings (2-D sine-cosine, fixed, in the encoder and the decoder as in the authors' code);
  a linear layer predicts each patch's pixels;
- the loss is the mean squared error on the removed patches only, against the pixels or (the
  paper's default, `norm_pix_loss`) against each patch normalised by its own mean and variance.

After pre-training on unlabeled images the encoder is evaluated both ways the paper does
(Section 4): by a linear probe on a frozen copy of it (BatchNorm without affine, a linear
classifier: `probe_logits`) and by fine-tuning the whole encoder with a linear head (layer-wise
learning-rate decay, label smoothing: `predict_logits`). Both read the authors' pooled features
(`Encoder`, their `global_pool`): the mean of the patch tokens before the encoder's final
LayerNorm, through a new LayerNorm. With `pretrain_steps = 0` the same run
is the ViT trained from scratch (and a linear probe of its random initial features).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from evals.contract import SafetensorsModule
from evals.tasks.image_loaders import image_dataset
from reproductions.common.training import restore, snapshot
from reproductions.vit import classify, vit
from reproductions.vit.classify import channels, num_classes
from reproductions.vit.model import Block, ViT, init_weights, patchify, unpatchify


@dataclass
class Config(vit.Config):
    """The defaults are the paper's ViT-B/16 on ImageNet-1k (Appendix A.1, Tables 8-10):
    pre-training 1600 epochs (Table 3's ViT-B) at batch 4096, AdamW beta2 0.95, lr 1.5e-4 x 4096/256, weight decay
    0.05, 40 warm-up epochs; fine-tuning 100 epochs at batch 1024, lr 5e-4 x 1024/256, layer decay
    0.65, weight decay 0.05, 5 warm-up epochs, label smoothing 0.1. The inherited `steps`, `lr`,
    `batch_size`, ... are the fine-tuning phase's; `n_train` the labeled examples of fine-tuning
    and probing."""

    # the ViT encoder (the inherited fields, with MAE's choices)
    dropout: float = 0.0
    head_hidden: int = 0
    pool: str = "mean"
    global_pool: bool = True               # pool="mean": the mean of the un-normalised patch tokens, then a new LayerNorm
    # fine-tuning
    steps: int = 125_114                   # 100 epochs of 1,281,167 images at batch 1024
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 6_256              # 5 epochs
    label_smoothing: float = 0.1
    grad_clip: float = 0.0                 # the authors' fine-tuning does not clip
    layer_decay: float = 0.65
    # linear probe (on frozen features, full batch; 0: none)
    probe_steps: int = 0
    probe_lr: float = 0.01
    # pre-training
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    n_unlabeled: int = 0                   # pre-training images (0: the whole training split)
    pretrain_steps: int = 500_456          # 1600 epochs at batch 4096 (0: no pre-training, the scratch baseline)
    pretrain_batch_size: int = 4096
    pretrain_lr: float = 2.4e-3
    pretrain_weight_decay: float = 0.05
    pretrain_beta2: float = 0.95
    pretrain_warmup_steps: int = 12_511    # 40 epochs
    pretrain_shift: int = 0                # in-memory data: random translation in pre-training
    reconstructions: int = 8               # images in the run dir's reconstructions.png


class Encoder(ViT):
    """The ViT encoder with the authors' fine-tuning pooling (`global_pool`, their models_vit.py):
    the features are the mean of the patch tokens as the last block leaves them (before the
    encoder's final LayerNorm, which only pre-training's decoder reads), through a new LayerNorm
    `fc_norm`. With `global_pool` off (or pool="cls") it is the ViT's own `features`."""

    def __init__(self, *args, global_pool: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.global_pool = global_pool and self.pool == "mean"
        if self.global_pool:
            self.fc_norm = nn.LayerNorm(self.dim, eps=1e-6)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if not self.global_pool:
            return super().features(images)
        tokens = self.embed(images)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = self.drop(torch.cat([cls, tokens], dim=1))
        for block in self.blocks:
            x = block(x)
        return self.fc_norm(x[:, 1:].mean(1))


def build_encoder(cfg: Config) -> Encoder:
    return Encoder(cfg.image_size, cfg.patch_size, channels(cfg), num_classes(cfg), cfg.dim, cfg.depth, cfg.heads,
                   cfg.mlp_dim, cfg.dropout, cfg.head_hidden, cfg.pool, global_pool=cfg.global_pool)


def sincos_pos_embed(dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """2-D sine-cosine position embeddings, 1 x (1 + grid^2) x dim (a zero row for the class
    token): half the channels encode the row, half the column, each as sin/cos of
    position x 10000^(-2i/d) (the Transformer's encoding, per axis)."""
    if dim % 4:
        raise ValueError(f"sincos_pos_embed: dim {dim} must be a multiple of 4")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")

    def axis(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    emb = torch.cat([axis(ys), axis(xs)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb])
    return emb.float().unsqueeze(0)


def random_masking(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
    """Per-sample random masking by shuffling (Section 3, "MAE encoder"). x: N x L x D.
    Returns the kept tokens (N x L_keep x D, in shuffled order), the binary mask in the
    original order (N x L, 1 = removed) and `ids_restore`, the permutation that un-shuffles."""
    n, length, d = x.shape
    len_keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(n, length, device=x.device)
    ids_shuffle = noise.argsort(dim=1)        # ascending: the lowest noise is kept
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_kept = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    mask = torch.ones(n, length, device=x.device)
    mask[:, :len_keep] = 0
    return x_kept, mask.gather(1, ids_restore), ids_restore


def reconstruction_target(images: torch.Tensor, patch_size: int, norm_pix: bool) -> torch.Tensor:
    """The pixels the decoder predicts, per patch: the encoder's input scale ([-1, 1]), or each
    patch normalised by its own mean and variance (`norm_pix_loss`, Section 3 and Table 1d)."""
    target = patchify(images * 2.0 - 1.0, patch_size)
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return target


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per patch, averaged over the removed patches only."""
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


class MAE(SafetensorsModule):
    """The pre-training model (encoder + decoder) and the two classifiers made from its encoder:
    the trained thing. `predict_logits`: the fine-tuned encoder; `probe_logits`: the linear probe
    on `probe_encoder`, a frozen copy of the encoder as pre-training left it."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.mask_ratio, self.norm_pix = cfg.mask_ratio, cfg.norm_pix_loss
        self.encoder = build_encoder(cfg)
        grid = cfg.image_size // cfg.patch_size
        self.encoder.pos_embed.data.copy_(sincos_pos_embed(cfg.dim, grid))
        self.encoder.pos_embed.requires_grad_(False)  # fixed in pre-training, tuned in fine-tuning
        p, c = cfg.patch_size, self.encoder.channels
        self.decoder_embed = nn.Linear(cfg.dim, cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(cfg.decoder_dim, grid))
        self.decoder_blocks = nn.ModuleList(Block(cfg.decoder_dim, cfg.decoder_heads, 4 * cfg.decoder_dim)
                                            for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(cfg.decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(cfg.decoder_dim, p * p * c)
        for m in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            init_weights(m)
        if cfg.probe_steps:  # the linear probe: BatchNorm without affine parameters, then a linear classifier
            self.probe_encoder = build_encoder(cfg).requires_grad_(False)
            self.probe_norm = nn.BatchNorm1d(cfg.dim, affine=False, eps=1e-6)
            self.probe = nn.Linear(cfg.dim, self.encoder.head.out_features)
            init_weights(self.probe)
        nn.init.normal_(self.mask_token, std=0.02)

    # -- pre-training -----------------------------------------------------------------------
    def forward_encoder(self, images: torch.Tensor, noise: torch.Tensor | None = None):
        tokens = self.encoder.embed(images)                       # patches + positions, eq. (1)
        kept, mask, ids_restore = random_masking(tokens, self.mask_ratio, noise)
        return self.encoder.encode(kept), mask, ids_restore         # class token + visible patches

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)       # visible first, then the removed
        patches = patches.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # original order
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]     # N x L x (P*P*C), no class token

    def pretrain_loss(self, images: torch.Tensor, noise: torch.Tensor | None = None):
        latent, mask, ids_restore = self.forward_encoder(images, noise)
        pred = self.forward_decoder(latent, ids_restore)
        target = reconstruction_target(images, self.encoder.patch_size, self.norm_pix)
        return masked_mse(pred, target, mask), pred, mask

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input, reconstruction with the visible patches pasted back), images in [0, 1].
        With `norm_pix_loss` the prediction is mapped back with each true patch's mean and std."""
        _, pred, mask = self.pretrain_loss(images, noise)
        p, c = self.encoder.patch_size, self.encoder.channels
        true = patchify(images * 2.0 - 1.0, p)
        if self.norm_pix:
            pred = pred * (true.var(-1, keepdim=True) + 1e-6).sqrt() + true.mean(-1, keepdim=True)
        m = mask.unsqueeze(-1)
        masked = unpatchify(true * (1 - m), p, c)  # removed patches shown grey
        recon = unpatchify(true * (1 - m) + pred * m, p, c)
        return ((masked + 1) / 2).clamp(0, 1), ((recon + 1) / 2).clamp(0, 1)

    # -- the classifiers ----------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    @torch.no_grad()
    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.predict_logits(images)

    @torch.no_grad()
    def probe_logits(self, images: torch.Tensor) -> torch.Tensor:
        self.probe_encoder.eval()
        self.probe_norm.eval()
        return self.probe(self.probe_norm(self.probe_encoder.features(images.to(self.mask_token.device))))


def layer_decay_groups(encoder: ViT, weight_decay: float, layer_decay: float) -> list[dict]:
    """Fine-tuning's layer-wise learning-rate decay (Appendix A.1, after BEiT): the parameters of
    layer i of depth L get lr x layer_decay^(L + 1 - i); embeddings are layer 0, the final norm
    and the head layer L + 1. Weight decay as in `classify.param_groups`."""
    depth = len(encoder.blocks)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in encoder.named_parameters():
        if name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        elif name.startswith(("patch_embed", "cls_token", "pos_embed")):
            layer = 0
        else:
            layer = depth + 1
        decay = p.ndim >= 2 and not name.endswith(("_token", "pos_embed"))
        g = groups.setdefault((layer, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                               "lr_scale": layer_decay ** (depth + 1 - layer)})
        g["params"].append(p)
    return list(groups.values())


def build(cfg: Config) -> MAE:
    return MAE(cfg)


def pretrain(model: MAE, ds: Dataset, cfg: Config, run) -> None:
    """Section 3 on unlabeled images: AdamW (beta2 0.95), warm-up then cosine decay."""
    data_cfg = dataclasses.replace(cfg, batch_size=cfg.pretrain_batch_size, random_shift=cfg.pretrain_shift)
    groups = classify.param_groups(model, cfg.pretrain_weight_decay, exclude=("probe", "encoder.head", "encoder.fc_norm"))
    opt = torch.optim.AdamW(groups, lr=cfg.pretrain_lr, betas=(0.9, cfg.pretrain_beta2))
    parts = {"model": model, "opt": opt}
    step = 0
    resumed = run.resume_state()
    if resumed is not None and resumed["phase"] == "pretrain":
        step = restore(resumed["parts"], parts)["step"]
    model.train()
    loss_sum, seen = 0.0, 0
    for x, _ in classify.batches(ds, data_cfg, run.seed, step, run.device):
        if step >= cfg.pretrain_steps:
            break
        lr = classify.learning_rate(step, cfg.pretrain_lr, cfg.pretrain_warmup_steps, cfg.pretrain_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        loss, _, _ = model.pretrain_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_sum, seen = loss_sum + loss.item(), seen + 1
        if step % cfg.log_every == 0 or step == cfg.pretrain_steps:
            run.log(step, pretrain_loss=loss_sum / seen, pretrain_lr=lr)
            loss_sum, seen = 0.0, 0
        run.maybe_checkpoint(step, lambda: {"phase": "pretrain", "parts": snapshot(parts, step=step)})
        run.advance()


@torch.no_grad()
def save_reconstructions(model: MAE, ds: Dataset, n: int, path, seed: int) -> None:
    """A grid of n rows (original, masked input, reconstruction) as a PNG in the run dir."""
    from torchvision.utils import save_image

    x = next(iter(DataLoader(ds, batch_size=n, shuffle=False)))[0].to(model.mask_token.device)
    noise = torch.rand(x.shape[0], model.encoder.num_patches, generator=torch.Generator().manual_seed(seed)).to(x.device)
    model.eval()
    masked, recon = model.reconstruct(x, noise)
    model.train()
    grid = torch.stack([x, masked, recon], dim=1).flatten(0, 1)
    if grid.shape[1] == 1:
        grid = grid.expand(-1, 3, -1, -1)
    save_image(grid.cpu(), str(path), nrow=3, padding=1, pad_value=1.0)


@torch.no_grad()
def encoder_features(encoder: ViT, ds: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = encoder.training
    encoder.eval()
    device = encoder.cls_token.device
    feats, labels = [], []
    for x, y in DataLoader(ds, batch_size=batch_size, shuffle=False):
        feats.append(encoder.features(x.to(device)))
        labels.append(y.to(device))
    encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def linear_probe(model: MAE, ds: Dataset, cfg: Config, run, step_offset: int) -> None:
    """Section 4 / Appendix A.1's linear probing on frozen features: the encoder is copied as it
    is now into `probe_encoder`; BatchNorm without affine (here at its converged statistics, the
    features' mean and variance over the labeled set), then a linear classifier trained by
    full-batch AdamW without weight decay."""
    model.probe_encoder.load_state_dict(model.encoder.state_dict())
    feats, labels = encoder_features(model.probe_encoder, ds)
    model.probe_norm.running_mean.copy_(feats.mean(0))
    model.probe_norm.running_var.copy_(feats.var(0))
    model.probe_norm.eval()
    z = model.probe_norm(feats)
    opt = torch.optim.AdamW(model.probe.parameters(), lr=cfg.probe_lr, weight_decay=0.0)
    for step in range(cfg.probe_steps):
        logits = model.probe(z)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.probe_steps:
            acc = (logits.argmax(-1) == labels).float().mean().item()
            run.log(step_offset + step + 1, probe_loss=loss.item(), probe_train_accuracy=acc)
        run.advance()


def train(cfg: Config, run) -> MAE:
    """Pre-training (Section 3), then the linear probe on the frozen encoder, then fine-tuning."""
    model = build(cfg).to(run.device)
    labeled = classify.training_set(cfg)
    run.progress(cfg.pretrain_steps + cfg.probe_steps + cfg.steps)
    resumed = run.resume_state()
    if resumed is None or resumed["phase"] == "pretrain":
        if cfg.pretrain_steps > 0:
            unlabeled = image_dataset(cfg.dataset, "train", cfg.image_size, cfg.data_root, cfg.n_unlabeled, augment=True)
            pretrain(model, unlabeled, cfg, run)
            save_reconstructions(model, unlabeled, cfg.reconstructions, run.dir / "reconstructions.png", run.seed)
        if cfg.probe_steps:
            linear_probe(model, labeled, cfg, run, cfg.pretrain_steps)
    model.encoder.pos_embed.requires_grad_(True)
    groups = layer_decay_groups(model.encoder, cfg.weight_decay, cfg.layer_decay)
    return classify.fit(model, labeled, cfg, run, groups=groups, prefix="finetune_",
                        step_offset=cfg.pretrain_steps + cfg.probe_steps)


def dry_run_step(model: MAE, cfg: Config) -> dict[str, float]:
    """One pre-training step on 2 random images at the config's resolution."""
    x = torch.rand(2, model.encoder.channels, cfg.image_size, cfg.image_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.pretrain_lr,
                            betas=(0.9, cfg.pretrain_beta2))
    loss, _, mask = model.pretrain_loss(x)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {"pretrain_loss": loss.item(), "masked_fraction": mask.mean().item()}


def data_fingerprint(cfg: Config) -> str:
    return (f"{classify.data_fingerprint(cfg)}; unlabeled n={cfg.n_unlabeled or 'all'}: "
            + classify.fingerprint(image_dataset(cfg.dataset, "train", cfg.image_size, cfg.data_root, cfg.n_unlabeled)))


required_data = classify.required_data
