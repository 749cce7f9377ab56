"""LLaVA's full tier: ScienceQA with the paper's recipe (Section 5.2), at the largest scale this
project's pieces reach.

- Vision encoder g: OpenAI's released CLIP ViT-L/14 (open_clip's safetensors, loaded by
  `reproductions.clip.pretrained`), frozen, grid features before its last layer (`select_layer`).
- Projector W: linear, eq. (1) (`llava.py`'s splice and answer-only loss, eqs. 2-3).
- LM: the project's GPT (`reproductions/transformer/gpt.py`) at GPT-2 small's shape, its weights
  GPT-2's released ones (Hugging Face `openai-community/gpt2`, `model.safetensors`, never
  unpickled) mapped onto the GPT's names (`transformer/gpt2_weights.py`), GPT-2's tanh GELU plugged in through
  the GPT's feed-forward extension point; GPT-2's byte-pair tokenizer (`tokenizer.json`).
- Stage 1: the projector alone on LLaVA-CC3M-Pretrain-595K, 1 epoch, lr 2e-3, batch 128.
- Stage 2: projector and LM on ScienceQA's train split, 12 epochs, lr 2e-5, batch 32; the target is
  reasoning first, then "The answer is X." (Table 7's best single model).
- Conversations in LLaVA v0's format: "###Human: {prompt}###Assistant: {answer}###", the loss on
  the answer and its closing "###" only.

Scored by the `scienceqa` evaluator: greedy completions of the test split's prompts, the answer
letter parsed from the last "The answer is X".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from evals.contract import SafetensorsModule
from evals.tasks import scienceqa as sqa
from reproductions.clip import pretrained
from reproductions.llava.llava import IGNORE, answer_loss, gpt_logits, splice
from reproductions.transformer.gpt import GPT, GPTConfig
from reproductions.transformer.gpt2_weights import gpt2_ffn, gpt2_state_dict
from reproductions.vit.classify import learning_rate

MARKER = -1   # the image's place in a token sequence (no vocabulary id)
HUMAN, ASSISTANT, SEP = "###Human: ", "###Assistant: ", "###"


@dataclass
class Config:
    vision_model: str = "ViT-L-14-quickgelu"
    vision_checkpoint: str = "data/clip/vit_large_patch14_clip_224.openai/open_clip_model.safetensors"
    select_layer: int = -2
    lm_checkpoint: str = "data/llava/gpt2/model.safetensors"
    tokenizer: str = "data/llava/gpt2/tokenizer.json"
    n_layer: int = 12                 # GPT-2 small
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50257
    pretrain_root: str = "data/llava/cc595k"
    data_root: str = "data/scienceqa"
    image_size: int = 224
    max_tokens: int = 768             # text tokens kept per example (the rest cut)
    stage1_epochs: float = 1.0
    stage1_batch_size: int = 128
    stage1_lr: float = 2e-3
    stage2_epochs: float = 12.0
    stage2_batch_size: int = 32
    stage2_lr: float = 2e-5
    warmup_ratio: float = 0.03
    max_new_tokens: int = 128         # evaluation: the reasoning and the answer
    n_stage1: int = 0                 # 0: every pair / question
    n_train: int = 0
    log_every: int = 50


def build_gpt(cfg: Config) -> GPT:
    return GPT(GPTConfig(vocab_size=cfg.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                         n_embd=cfg.n_embd, bias=True), ffn=gpt2_ffn)


class LLaVAScienceQA(SafetensorsModule):
    def __init__(self, cfg: Config):
        super().__init__()
        from tokenizers import Tokenizer

        self.clip = pretrained.build(pretrained.Config(model=cfg.vision_model, checkpoint=cfg.vision_checkpoint,
                                                       image_size=cfg.image_size))
        self.clip.requires_grad_(False)
        width = self.clip.model.visual.conv1.out_channels
        self.projector = nn.Linear(width, cfg.n_embd)                      # W, eq. (1)
        self.lm = build_gpt(cfg)
        self.tok = Tokenizer.from_file(cfg.tokenizer)
        self.select_layer, self.max_tokens = cfg.select_layer, cfg.max_tokens

    def num_parameters(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("lm.lm_head"))

    def save(self, path) -> None:
        from safetensors.torch import save_model

        save_model(self, str(path))

    def load(self, path) -> "LLaVAScienceQA":
        from safetensors.torch import load_model

        load_model(self, str(path), device=str(self.projector.weight.device))
        return self

    @torch.no_grad()
    def visual_features(self, images: torch.Tensor) -> torch.Tensor:
        """Z_v: ViT-L/14's patch tokens after all but the last `-select_layer - 1` blocks."""
        v = self.clip.model.visual
        x = v._embeds((images - self.clip.mean) / self.clip.std)
        blocks = v.transformer.resblocks
        depth = len(blocks) + self.select_layer + 1
        if not v.transformer.batch_first:
            x = x.transpose(0, 1)
        for r in blocks[:depth]:
            x = r(x)
        if not v.transformer.batch_first:
            x = x.transpose(0, 1)
        return x[:, 1:]

    def encode(self, prompt: str, answer: str | None = None) -> tuple[list[int], list[bool]]:
        """LLaVA v0's conversation as ids (MARKER where the image goes) and the answer mask."""
        ids, mask = [], []
        head, _, tail = (HUMAN + prompt).partition(sqa.IMAGE)
        for piece, marker in ((head, _ != ""), (tail + ASSISTANT, False)):
            ids += self.tok.encode(piece).ids
            if marker:
                ids.append(MARKER)
        mask = [False] * len(ids)
        if answer is not None:
            a = self.tok.encode(answer + SEP).ids
            ids, mask = ids + a, mask + [True] * len(a)
        return ids[-self.max_tokens:], mask[-self.max_tokens:]

    def inputs(self, images: torch.Tensor | None, rows: list[list[int]], masks: list[list[bool]]):
        """Embeddings and labels: with images, every row has one MARKER (eq. 2's splice); without,
        the text alone. Right-padded with id 0, padding ignored."""
        device = self.projector.weight.device
        length = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), length, dtype=torch.int64, device=device)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
        for i, (r, m) in enumerate(zip(rows, masks)):
            tokens[i, :len(r)], mask[i, :len(m)] = torch.tensor(r), torch.tensor(m)
        if images is None:
            return self.lm.wte(tokens), torch.where(mask, tokens, IGNORE)
        h_v = self.projector(self.visual_features(images.to(device)))
        return splice(self.lm.wte(tokens.clamp(min=0)), tokens, mask, h_v, marker=MARKER)

    def loss(self, images, examples: list[sqa.Example]) -> torch.Tensor:
        enc = [self.encode(e.prompt, e.target) for e in examples]
        x, labels = self.inputs(images, [r for r, _ in enc], [m for _, m in enc])
        return answer_loss(gpt_logits(self.lm, x), labels)

    @torch.no_grad()
    def answer(self, images: list[torch.Tensor | None], prompts: list[str], max_new_tokens: int) -> list[str]:
        """The `VisualAnswerer` capability: greedy completions, one prompt at a time, up to '###'."""
        self.eval()
        out = []
        for image, prompt in zip(images, prompts):
            ids, _ = self.encode(prompt if image is not None else prompt.replace(sqa.IMAGE, "").lstrip())
            new: list[int] = []
            for _ in range(max_new_tokens):
                x, _ = self.inputs(None if image is None else image[None], [ids + new], [[False] * (len(ids) + len(new))])
                nxt = int(gpt_logits(self.lm, x[:, -self.lm.cfg.block_size:])[0, -1].argmax())
                new.append(nxt)
                if self.tok.decode(new).endswith(SEP):
                    break
            out.append(self.tok.decode(new).removesuffix(SEP))
        return out


def build(cfg: Config) -> LLaVAScienceQA:
    return LLaVAScienceQA(cfg)


def load_pretrained(model: LLaVAScienceQA, cfg: Config) -> LLaVAScienceQA:
    from safetensors.torch import load_file

    model.clip.load(Path(cfg.vision_checkpoint))
    model.lm.load_state_dict(gpt2_state_dict(load_file(cfg.lm_checkpoint), cfg.n_layer))
    return model


def _batches(examples: list[sqa.Example], batch_size: int, epochs: float, seed: int):
    """Batches of examples over `epochs` shuffled passes; each batch all with images or all without."""
    g = torch.Generator().manual_seed(seed)
    steps = max(1, round(epochs * len(examples) / batch_size))
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(examples), generator=g).tolist()
        take, order = order[:batch_size], order[batch_size:]
        with_image = [examples[i] for i in take if examples[i].image is not None]
        without = [examples[i] for i in take if examples[i].image is None]
        yield [b for b in (with_image, without) if b]


def _stage(model: LLaVAScienceQA, examples, params, cfg: Config, batch_size: int, epochs: float, lr: float,
           seed: int, run, name: str, offset: int) -> int:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = max(1, round(epochs * len(examples) / batch_size))
    warmup = max(1, round(cfg.warmup_ratio * steps))
    device = model.projector.weight.device
    model.train()
    model.clip.eval()
    for step, groups in enumerate(_batches(examples, batch_size, epochs, seed)):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, lr, warmup, steps)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for part in groups:
            images = (torch.stack([sqa.read_image(e.image, cfg.image_size) for e in part]).to(device)
                      if part[0].image is not None else None)
            loss = model.loss(images, part) * len(part) / sum(len(p) for p in groups)
            loss.backward()
            total += loss.item()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            run.log(offset + step + 1, **{f"{name}_loss": total})
    return offset + steps


def train(cfg: Config, run) -> LLaVAScienceQA:
    model = load_pretrained(build(cfg), cfg).to(run.device)
    # stage 1: W alone on CC-595K
    model.lm.requires_grad_(False)
    step = _stage(model, sqa.load_cc595k(cfg.pretrain_root, cfg.n_stage1), list(model.projector.parameters()), cfg,
                  cfg.stage1_batch_size, cfg.stage1_epochs, cfg.stage1_lr, run.seed + 1, run, "stage1", 0)
    # stage 2: W and the LM on ScienceQA's train split
    model.lm.requires_grad_(True)
    params = list(model.projector.parameters()) + list(model.lm.parameters())
    _stage(model, sqa.load_scienceqa(cfg.data_root, "train", cfg.n_train), params, cfg, cfg.stage2_batch_size,
           cfg.stage2_epochs, cfg.stage2_lr, run.seed + 2, run, "stage2", step)
    model.eval()
    return model


def required_data(cfg: Config) -> list[str]:
    missing = [] if Path(cfg.vision_checkpoint).is_file() else [
        f"CLIP weights: no file {cfg.vision_checkpoint} (open_clip_model.safetensors of the Hugging Face repository "
        f"timm/vit_large_patch14_clip_224.openai)"]
    missing += [] if Path(cfg.lm_checkpoint).is_file() else [
        f"GPT-2 weights: no file {cfg.lm_checkpoint} (model.safetensors of the Hugging Face repository openai-community/gpt2)"]
    missing += [] if Path(cfg.tokenizer).is_file() else [
        f"GPT-2 tokenizer: no file {cfg.tokenizer} (tokenizer.json of openai-community/gpt2)"]
    return missing + sqa.missing_cc595k(cfg.pretrain_root) + sqa.missing_scienceqa(cfg.data_root)


def dry_run_step(model: LLaVAScienceQA, cfg: Config) -> dict[str, float]:
    """One stage-2 step on the first two training questions."""
    examples = sqa.load_scienceqa(cfg.data_root, "train", 2)
    device = model.projector.weight.device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.stage2_lr)
    losses = []
    for e in examples:
        image = sqa.read_image(e.image, cfg.image_size)[None].to(device) if e.image is not None else None
        loss = model.loss(image, [e])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"loss": sum(losses) / len(losses)}
