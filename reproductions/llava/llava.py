"""LLaVA: Visual Instruction Tuning (Liu, Li, Wu, Lee; arXiv 2304.08485).

The paper's architecture (Section 4.1, Figure 1) and training (Section 4.2), by equation:

    Z_v = g(X_v)                  the frozen CLIP vision encoder's grid features; the paper takes
                                  those before the last Transformer layer (Section 5.2): `visual_features`
    H_v = W . Z_v                 (1) a trainable linear projection into the LM's word-embedding
                                  space, one visual token per patch: `LLaVA.projector`
    X_instruct^t = [X_q^1, X_v] or [X_v, X_q^1] (random) for t = 1, X_q^t for t > 1
                                  (2) the multi-turn conversation of Table 2, the image's tokens
                                  spliced where `<image>` stands: `splice`
    p(X_a | X_v, X_instruct) = prod_i p_theta(x_i | X_v, X_instruct,<i, X_a,<i)
                                  (3) the auto-regressive objective on the assistant's answers only
                                  (the green tokens of Table 2, each answer's words and its <STOP>):
                                  `answer_loss`

Stage 1, "pre-training for feature alignment": the vision encoder and the LM frozen, only W
trained on image-caption pairs, each a single-turn 'describe the image briefly' conversation whose
answer is the caption. Stage 2, "fine-tuning end-to-end": the vision encoder frozen, W and the
LM's weights trained on multi-turn instruction conversations.

Components, imported from the papers this one builds on: the vision encoder is CLIP's image
encoder (`reproductions.clip`: our ViT trained contrastively; here trained on CLIP's own
captioned-shapes data inside the run, since no checkpoint is shipped), the LM our GPT
(`reproductions.transformer.gpt`) pre-trained on text. `Config`'s stage fields default to the
paper's Section 4.2 / Appendix values (stage 1: lr 2e-3, batch 128; stage 2: lr 2e-5, batch 32);
the tiers set the scale.

Arms (`mode`): `image` (LLaVA), `blind` (the same LM and stage 2 with `<image>` removed: no
visual input), `oracle` (the same LM and stage 2 reading the scene's true description in place of
the image: the counterpart of the paper's text-only GPT-4 given captions and boxes, against which
LLaVA-Bench's relative score is taken); `stage1: false` skips stage 1 (the paper's ablation,
Section 5.2 'training from scratch').

Pre-trained components depend on the seed and their own config fields only, so they are trained
once per seed and process and shared by every arm run there (`shared`, through
`reproductions/common/trained_once.py`): each is trained inside a random state of its own, so an
arm gives the same numbers whether they come from the cache or are trained afresh (what a lone
re-execution does).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from evals.contract import QuietRun, SafetensorsModule
from evals.tasks import visual_qa as vqa
from reproductions.clip import clip
from reproductions.common.trained_once import trained_once
from reproductions.transformer.gpt import GPT, GPTConfig
from reproductions.vit.classify import learning_rate

IGNORE = -100
MODES = ("image", "blind", "oracle")


@dataclass
class Config:
    # the vision encoder: CLIP's image encoder (its mini tier's ViT) and CLIP's own training of it
    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 64
    vision_layers: int = 3
    vision_heads: int = 4
    clip_text_width: int = 64
    clip_text_layers: int = 2
    clip_text_heads: int = 4
    clip_embed_dim: int = 64
    clip_n_train: int = 20_000
    clip_steps: int = 1500
    clip_batch_size: int = 128
    clip_lr: float = 1e-3
    clip_warmup_steps: int = 100
    select_layer: int = -2            # grid features before the last layer (Section 5.2: 90.92 vs 89.96)
    # the language model: our GPT, pre-trained on text (scene descriptions followed by conversations)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 80
    lm_n_docs: int = 20_000
    lm_steps: int = 2000
    lm_batch_size: int = 64
    lm_lr: float = 1e-3
    lm_warmup_steps: int = 100
    # the two stages (Section 4.2)
    mode: str = "image"               # image (LLaVA) | blind | oracle
    stage1: bool = True               # False: the paper's ablation without pre-training for alignment
    n_train: Annotated[int, Field(gt=0)] = 20_000   # scenes for stage 1's captions and stage 2's conversations
    stage1_steps: int = 1000
    stage1_batch_size: int = 128      # the paper's batch 128, lr 2e-3, 1 epoch
    stage1_lr: float = 2e-3
    stage2_steps: int = 1000
    stage2_batch_size: int = 32       # the paper's batch 32, lr 2e-5, 3 epochs
    stage2_lr: float = 2e-5
    warmup_ratio: float = 0.03        # the released scripts' warm-up, then cosine decay
    weight_decay: float = 0.0
    log_every: int = 50


# -- the projector and the splice (eqs. 1-3) ---------------------------------------------------------
def splice(text: torch.Tensor, tokens: torch.Tensor, answer_mask: torch.Tensor, inserts: torch.Tensor,
           marker: int = vqa.WORD_ID[vqa.IMAGE]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (2): each row's N `inserts` (B x N x d, the projected visual tokens H_v) in place of its
    one `marker` token in `text` (B x T x d, the embedded tokens). Returns the sequence, B x
    (T - 1 + N) x d, and its labels: the token id where `answer_mask` holds (eq. 3's targets),
    IGNORE at the visual tokens, the questions and the padding."""
    b, t, d = text.shape
    n = inserts.shape[1]
    found = (tokens == marker).sum(1)
    if (found != 1).any():
        raise ValueError(f"splice: every sequence needs exactly one image marker, found {found.tolist()}")
    p = (tokens == marker).int().argmax(1)[:, None]                       # B x 1, the marker's index
    j = torch.arange(t - 1 + n, device=text.device)[None]                 # 1 x L, output positions
    visual = (j >= p) & (j < p + n)
    src = torch.where(j < p, j, j - n + 1).clamp(0, t - 1)                # the text position shown at j
    vis = (j - p).clamp(0, n - 1)
    x = torch.where(visual[..., None], inserts.gather(1, vis[..., None].expand(-1, -1, d)),
                    text.gather(1, src[..., None].expand(-1, -1, d)))
    labels = torch.where(answer_mask.gather(1, src) & ~visual, tokens.gather(1, src), IGNORE)
    return x, labels


def splice_tokens(tokens: torch.Tensor, answer_mask: torch.Tensor, inserts: list[list[int]],
                  marker: int = vqa.WORD_ID[vqa.IMAGE]) -> tuple[torch.Tensor, torch.Tensor]:
    """The text-only counterpart of `splice`: each row's marker replaced by its own token ids (the
    oracle's description; the blind arm's nothing), right-padded; the inserted tokens are not
    answers."""
    rows, masks = [], []
    for row, mask, ins in zip(tokens.tolist(), answer_mask.tolist(), inserts):
        at = row.index(marker)
        end = max((i + 1 for i, x in enumerate(row) if x != vqa.WORD_ID[vqa.PAD]), default=0)
        rows.append(row[:at] + list(ins) + row[at + 1:end])
        masks.append(mask[:at] + [False] * len(ins) + mask[at + 1:end])
    out, m = vqa.pad(rows, masks)
    return out.to(tokens.device), m.to(tokens.device)


def text_positions(tokens: torch.Tensor, inserted: torch.Tensor, marker: int = vqa.WORD_ID[vqa.IMAGE]) -> torch.Tensor:
    """Where each text position's state sits in the spliced sequence (B x T): t before the marker,
    t + inserted - 1 from it on (the marker itself maps to the last inserted token, or to the token
    before it when nothing was inserted): the state that predicts text token t + 1."""
    p = (tokens == marker).int().argmax(1)[:, None]
    t = torch.arange(tokens.shape[1], device=tokens.device)[None]
    return torch.where(t < p, t, t + inserted[:, None] - 1).clamp(min=0)


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. (3): the mean negative log-likelihood of the answer tokens, each predicted from
    everything before it (position j predicts label j + 1)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)


def gpt_logits(gpt: GPT, x: torch.Tensor) -> torch.Tensor:
    """The GPT's forward (reproductions/transformer/gpt.py, `GPT.forward`) from input embeddings
    instead of token ids, B x L x vocab."""
    if x.shape[1] > gpt.cfg.block_size:
        raise ValueError(f"sequence of {x.shape[1]} tokens exceeds block_size={gpt.cfg.block_size}")
    positions = torch.arange(x.shape[1], device=x.device)
    x = gpt.drop(gpt.position.embed(x, positions))
    rotate = partial(gpt.position.rotate, positions=positions)
    for block in gpt.blocks:
        x = block(x, rotate)
    return gpt.lm_head(gpt.ln_f(x))


# -- the model --------------------------------------------------------------------------------------
def clip_config(cfg: Config) -> clip.Config:
    return clip.Config(image_size=cfg.image_size, patch_size=cfg.patch_size, vision_width=cfg.vision_width,
                       vision_layers=cfg.vision_layers, vision_heads=cfg.vision_heads, text_width=cfg.clip_text_width,
                       text_layers=cfg.clip_text_layers, text_heads=cfg.clip_text_heads, embed_dim=cfg.clip_embed_dim,
                       n_train=cfg.clip_n_train, steps=cfg.clip_steps, batch_size=cfg.clip_batch_size, lr=cfg.clip_lr,
                       weight_decay=0.1, warmup_steps=cfg.clip_warmup_steps, log_every=cfg.log_every)


def build_lm(cfg: Config) -> GPT:
    return GPT(GPTConfig(vocab_size=len(vqa.VOCAB), block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                         n_embd=cfg.n_embd, bias=True))


class LLaVA(SafetensorsModule):
    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.mode not in MODES:
            raise ValueError(f"config field 'mode': {cfg.mode!r} is not one of {MODES}")
        if not -cfg.vision_layers <= cfg.select_layer < 0:
            raise ValueError(f"config field 'select_layer': {cfg.select_layer} is not in [-{cfg.vision_layers}, -1]")
        self.mode, self.select_layer = cfg.mode, cfg.select_layer
        self.vision = clip.image_encoder(clip_config(cfg), cfg.clip_embed_dim)   # g, frozen
        self.vision.requires_grad_(False)
        self.projector = nn.Linear(cfg.vision_width, cfg.n_embd)                 # W, eq. (1)
        self.lm = build_lm(cfg)

    def num_parameters(self) -> int:
        return sum(p.numel() for name, p in self.named_parameters() if not name.startswith("lm.lm_head"))

    def save(self, path) -> None:
        clip.TiedSafetensors.save(self, path)

    def load(self, path) -> "LLaVA":
        return clip.TiedSafetensors.load(self, path)

    @torch.no_grad()
    def visual_features(self, images: torch.Tensor) -> torch.Tensor:
        """Z_v = g(X_v): the patch tokens (the class token dropped) after block `select_layer`
        (-1: the last, with the final LayerNorm as `ViT.patch_tokens`), B x patches x width."""
        vit = self.vision
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(images.shape[0], -1, -1)
        x = torch.cat([cls, vit.embed(images)], dim=1)
        depth = len(vit.blocks) + self.select_layer + 1
        for block in vit.blocks[:depth]:
            x = block(x)
        if depth == len(vit.blocks):
            x = vit.norm(x)
        return x[:, 1:]

    def spliced(self, images: torch.Tensor | None, features: torch.Tensor | None, descriptions: list[list[int]] | None,
                tokens: torch.Tensor, answer_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The LM's input embeddings, labels and the number of tokens inserted per row, for this
        arm's mode: H_v spliced at `<image>` (image), the description's tokens (oracle), nothing
        (blind). `features`, when given, are Z_v already computed."""
        if self.mode == "image":
            z = features if features is not None else self.visual_features(images)
            h_v = self.projector(z)                                                    # eq. (1)
            x, labels = splice(self.lm.wte(tokens), tokens, answer_mask, h_v)          # eq. (2)
            inserted = torch.full((len(tokens),), h_v.shape[1], device=tokens.device)
            return x, labels, inserted
        inserts = descriptions if self.mode == "oracle" else [[] for _ in range(len(tokens))]
        if inserts is None:
            raise ValueError("LLaVA: the oracle arm needs the scenes' descriptions")
        spliced, mask = splice_tokens(tokens, answer_mask, inserts)
        labels = torch.where(mask, spliced, IGNORE)
        inserted = torch.tensor([len(i) for i in inserts], device=tokens.device)
        return self.lm.wte(spliced), labels, inserted

    def training_loss(self, images, features, descriptions, tokens, answer_mask) -> torch.Tensor:
        x, labels, _ = self.spliced(images, features, descriptions, tokens, answer_mask)
        return answer_loss(gpt_logits(self.lm, x), labels)                             # eq. (3)

    @torch.no_grad()
    def next_token_predictions(self, images: torch.Tensor, descriptions: list[str], tokens: torch.Tensor) -> torch.Tensor:
        """The `VisualChat` capability: B x T, the greedy prediction of text token t + 1 from the
        image (or what the arm reads instead) and text tokens 0..t."""
        was_training = self.training
        self.eval()
        try:
            device = self.projector.weight.device
            tokens = tokens.to(device)
            mask = torch.zeros_like(tokens, dtype=torch.bool)
            desc = [vqa.ids(d) for d in descriptions]
            x, _, inserted = self.spliced(images.to(device), None, desc, tokens, mask)
            pred = gpt_logits(self.lm, x).argmax(-1)
            return pred.gather(1, text_positions(tokens, inserted).clamp(max=pred.shape[1] - 1))
        finally:
            self.train(was_training)


def build(cfg: Config) -> LLaVA:
    return LLaVA(cfg)


# -- pre-trained components, once per seed and process -----------------------------------------
VISION_FIELDS = ("image_size", "patch_size", "vision_width", "vision_layers", "vision_heads", "clip_text_width",
                 "clip_text_layers", "clip_text_heads", "clip_embed_dim", "clip_n_train", "clip_steps",
                 "clip_batch_size", "clip_lr", "clip_warmup_steps")
LM_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "lm_n_docs", "lm_steps", "lm_batch_size", "lm_lr",
             "lm_warmup_steps")


def shared(kind: str, fields: tuple[str, ...], cfg: Config, seed: int, device: torch.device,
           make: Callable[[Config, int, torch.device, Callable[..., None]], dict[str, torch.Tensor]],
           log: Callable[..., None]) -> dict[str, torch.Tensor]:
    """`make`'s weights, trained once per (kind, `fields`' values, seed, device) in a random state
    of their own (`trained_once`); the curve it logged is replayed on a cache hit."""
    key = ("llava", kind, tuple(getattr(cfg, f) for f in fields))
    return trained_once(key, seed, device, lambda record: make(cfg, seed, device, record), log)


class _Logged(QuietRun):
    """A quiet run context that passes `log` on (CLIP's `fit` logs through its run)."""

    def __init__(self, seed: int, device: torch.device, log: Callable[..., None]):
        super().__init__(seed, str(device))
        self.device = device
        self._log = log

    def log(self, step: int, **values: float) -> None:
        self._log(step, **values)


def train_vision(cfg: Config, seed: int, device: torch.device, log: Callable[..., None]) -> dict[str, torch.Tensor]:
    """CLIP trained by its own code (`clip.fit`) on its captioned shapes; the image encoder kept."""
    model = clip.fit(clip.build(clip_config(cfg)).to(device), clip_config(cfg),
                     _Logged(seed, device, lambda step, **v: log(step, **{f"clip_{k}": x for k, x in v.items()})))
    return model.visual.state_dict()


def pretrain_lm(cfg: Config, seed: int, device: torch.device, log: Callable[..., None]) -> dict[str, torch.Tensor]:
    """Next-token pre-training of the GPT on text documents (`visual_qa.text_documents`: each a
    scene's description followed by a conversation about it, every question type), AdamW with
    warm-up and cosine decay."""
    tokens, _ = vqa.text_documents(vqa.make_visual_qa(cfg.lm_n_docs, cfg.image_size, split="text"))
    gpt = build_lm(cfg).to(device)
    opt = torch.optim.AdamW(gpt.parameters(), lr=cfg.lm_lr, betas=(0.9, 0.95), weight_decay=0.1)
    batches = torch.Generator().manual_seed(seed)
    gpt.train()
    for step in range(cfg.lm_steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, cfg.lm_lr, cfg.lm_warmup_steps, cfg.lm_steps)
        x = tokens[torch.randint(len(tokens), (cfg.lm_batch_size,), generator=batches)].to(device)
        targets = torch.where(x[:, 1:] != vqa.WORD_ID[vqa.PAD], x[:, 1:], IGNORE)
        logits = gpt(x[:, :-1])[0]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(gpt.parameters(), 1.0)
        opt.step()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.lm_steps:
            log(step + 1, lm_pretrain_loss=loss.item())
    return gpt.state_dict()


# -- the two stages (Section 4.2) -------------------------------------------------------------------
@dataclass
class StageData:
    features: torch.Tensor | None     # Z_v of every training image (the encoder is frozen: computed once)
    descriptions: list[list[int]]
    tokens: torch.Tensor
    answer_mask: torch.Tensor


def run_stage(model: LLaVA, data: StageData, params: list[nn.Parameter], steps: int, batch_size: int, lr: float,
              cfg: Config, seed: int, log: Callable[..., None], name: str) -> None:
    """`steps` AdamW steps of eq. (3) on `params` (the rest frozen), warm-up then cosine decay,
    batches drawn by a generator seeded by `seed`."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    batches = torch.Generator().manual_seed(seed)
    warmup = max(1, round(cfg.warmup_ratio * steps))
    device = model.projector.weight.device
    loss_sum, seen = 0.0, 0
    model.train()
    for step in range(steps):
        # ALGO LOGIC
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, lr, warmup, steps)
        idx = torch.randint(len(data.tokens), (batch_size,), generator=batches)
        tokens, mask = data.tokens[idx], data.answer_mask[idx]
        width = int((tokens != vqa.WORD_ID[vqa.PAD]).sum(1).max())
        feats = data.features[idx].to(device) if data.features is not None else None
        loss = model.training_loss(None, feats, [data.descriptions[i] for i in idx.tolist()],
                                   tokens[:, :width].to(device), mask[:, :width].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        # TRY NOT TO MODIFY: logging
        loss_sum, seen = loss_sum + loss.item(), seen + 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            log(step + 1, **{f"{name}_loss": loss_sum / seen})
            loss_sum, seen = 0.0, 0


def stage_data(model: LLaVA, data: vqa.VisualQA, tokens: torch.Tensor, mask: torch.Tensor, device) -> StageData:
    feats = None
    if model.mode == "image":
        feats = torch.cat([model.visual_features(data.images[i:i + 1000].to(device)).cpu()
                           for i in range(0, len(data), 1000)])
    return StageData(feats, vqa.description_ids(data), tokens, mask)


def train(cfg: Config, run) -> LLaVA:
    device = run.device
    offset = {"clip": 0, "lm": cfg.clip_steps, "stage1": cfg.clip_steps + cfg.lm_steps,
              "stage2": cfg.clip_steps + cfg.lm_steps + cfg.stage1_steps}

    def logger(phase: str) -> Callable[..., None]:
        return lambda step, **values: run.log(offset[phase] + step, **values)

    model = build(cfg).to(device)
    if cfg.mode == "image":
        vision = shared("vision", VISION_FIELDS, cfg, run.seed, device, train_vision, logger("clip"))
        model.vision.load_state_dict(vision)
    model.lm.load_state_dict(shared("lm", LM_FIELDS, cfg, run.seed, device, pretrain_lm, logger("lm")))
    model.vision.eval()

    data = vqa.make_visual_qa(cfg.n_train, cfg.image_size, split="train")
    if cfg.mode == "image" and cfg.stage1:
        # stage 1: only W, on captions (the vision encoder and the LM frozen)
        tokens, mask = vqa.caption_batch(data)
        model.lm.requires_grad_(False)
        run_stage(model, stage_data(model, data, tokens, mask, device), list(model.projector.parameters()),
                  cfg.stage1_steps, cfg.stage1_batch_size, cfg.stage1_lr, cfg, run.seed + 1, logger("stage1"), "stage1")
    # stage 2: W and the LM, on the instruction conversations
    model.lm.requires_grad_(True)
    tokens, mask = vqa.instruction_batch(data)
    params = list(model.lm.parameters()) + (list(model.projector.parameters()) if cfg.mode == "image" else [])
    run_stage(model, stage_data(model, data, tokens, mask, device), params, cfg.stage2_steps, cfg.stage2_batch_size,
              cfg.stage2_lr, cfg, run.seed + 2, logger("stage2"), "stage2")
    model.eval()
    save_examples(run.dir / "examples.png", cfg)
    return model


def save_examples(path, cfg: Config, n: int = 6) -> None:
    """The first `n` test scenes, 4x enlarged, left to right: the images of the example
    conversations the `visual_qa` evaluator decodes into the record's protocol (the test stream is
    prefix-stable, so these are the first scenes of the evaluator's larger draw)."""
    from torchvision.utils import save_image

    images = vqa.make_visual_qa(n, cfg.image_size, split="test").images
    save_image(F.interpolate(images, scale_factor=4, mode="nearest"), str(path), nrow=n, padding=2, pad_value=1.0)


def dry_run_step(model: LLaVA, cfg: Config) -> dict[str, float]:
    """One stage-2 step on 4 conversations."""
    data = vqa.make_visual_qa(4, cfg.image_size, split="train")
    device = model.projector.weight.device
    tokens, mask = vqa.instruction_batch(data)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.stage2_lr)
    loss = model.training_loss(data.images.to(device), None, vqa.description_ids(data), tokens.to(device), mask.to(device))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {"loss": loss.item()}


def data_fingerprint(cfg: Config) -> str:
    data = vqa.make_visual_qa(cfg.n_train, cfg.image_size, split="train")
    return f"visual_qa train n={cfg.n_train} size={cfg.image_size}: {data.fingerprint()}"


__all__ = ["Config", "LLaVA", "build", "train", "dry_run_step", "data_fingerprint", "splice", "splice_tokens",
           "answer_loss"]
