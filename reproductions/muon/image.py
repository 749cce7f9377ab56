"""Muon against AdamW on the second task the post reports, an image classifier: the ViT of
`reproductions/vit` (eq. 1-4 of its paper) trained from scratch with the recipe of its
`classify.py` (linear warm-up then cosine decay, gradient clipping, batches a pure function of
(seed, step)), the optimiser chosen by `optimizer` as in `lm.py`: Muon on the encoder blocks'
matrices (attention and MLP projections), AdamW on the patch embedding, class token, position
embeddings, LayerNorms, biases and the classification head; or AdamW on everything (`param_groups`
of classify.py: weight decay on matrices only).

The post's image result is the CIFAR-10 speedrun (airbench); this tier uses the project's generated
images instead (`evals/tasks/images.py`), scored by the `classification` evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from reproductions.common.training import restore, snapshot
from reproductions.muon import hybrid
from reproductions.muon.hybrid import MuonSettings
from reproductions.vit import classify, vit
from reproductions.vit.model import ViT

build = vit.build
data_fingerprint = classify.data_fingerprint
required_data = classify.required_data


@dataclass
class Config(MuonSettings, vit.Config):
    """The ViT and its training recipe (`vit.Config`), and the Muon settings of `hybrid.py`; `lr`,
    `beta2` and `weight_decay` are AdamW's."""


def optimizers(model: nn.Module, cfg: Config) -> list[torch.optim.Optimizer]:
    hybrid.check(cfg)
    if cfg.optimizer == "adamw":
        return [torch.optim.AdamW(classify.param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2))]
    muon_params = {id(p) for p in hybrid.split_parameters(model)[0]}

    def adamw(rest):  # classify.param_groups' decay rule, restricted to what Muon does not take
        groups = classify.param_groups(model, cfg.weight_decay)
        for g in groups:
            g["params"] = [p for p in g["params"] if id(p) not in muon_params]
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))

    return hybrid.hybrid(model, cfg, adamw)


def train(cfg: Config, run) -> ViT:
    model = build(cfg).to(run.device)
    opts = optimizers(model, cfg)
    parts = {"model": model, **{f"opt{i}": o for i, o in enumerate(opts)}}
    step = 0
    if (resumed := run.resume_state()) is not None:
        step = restore(resumed, parts)["step"]
    run.progress(cfg.steps)
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in classify.batches(classify.training_set(cfg), cfg, run.seed, step, run.device):
        if step >= cfg.steps:
            break
        # ALGO LOGIC: one step of the arm's optimisers, at the recipe's scheduled rate --------------
        multiplier = classify.learning_rate(step, 1.0, cfg.warmup_steps, cfg.steps, cfg.lr_decay)
        hybrid.set_rates(opts, multiplier, cfg.lr, cfg)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt in opts:
            opt.step()
        step += 1
        # TRY NOT TO MODIFY: logging and checkpoints ------------------------------------------------
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(-1) == y).sum().item()
        seen += len(y)
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, loss=loss_sum / seen, train_accuracy=correct / seen, lr=multiplier * cfg.lr)
            loss_sum, correct, seen = 0.0, 0, 0
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
        run.advance()
    model.eval()
    return model


def dry_run_step(model: ViT, cfg: Config) -> dict[str, float]:
    """One step of the arm's optimisers on a random batch of 2 images."""
    x = torch.rand(2, model.channels, cfg.image_size, cfg.image_size)
    y = torch.randint(0, classify.num_classes(cfg), (2,))
    opts = optimizers(model, cfg)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    for opt in opts:
        opt.step()
    return {"loss": loss.item()}
