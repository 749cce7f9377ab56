"""BitNet (Wang et al., arXiv 2310.11453): the GPT of `reproductions/transformer` with every
projection a BitLinear (`bitlinear.py`, eqs. 1-6), trained from scratch on the code corpus, beside
its full-precision twin.

- §2    BitNet keeps the Transformer's layout and replaces nn.Linear by BitLinear in attention
        and feed-forward; the input and output embeddings stay high precision;
- §2.2  training: straight-through estimator, full-precision latent weights updated by the
        optimiser (mixed precision);
- §3.3  the comparison with post-training quantisation: the full-precision model's linear layers
        binarised after training (Table 3's 1-bit 'Absmax' W1A8 row);
- §3.2  the scaling claim: the gap to the full-precision Transformer narrows as the model grows
        (Figure 3), tested here over three sizes;
- Table 1 / §2.3 the arithmetic-energy estimate (`energy.py`) and 1-bit weight storage.

`mode` picks what a run trains, on the same batches (one generator seeded by the run's seed):
`paired` a BitNet and its full-precision twin of the same shape in lock step (the agent is the
BitNet, holding the twin: the paired gap is one run's measurement), `bitnet` or `fp` alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
from safetensors.torch import load_file, save, save_file

from evals.tasks import code_corpus
from reproductions.bitnet import energy
from reproductions.bitnet.bitlinear import BitLinear, binarise, binarise_after_training, bit_linear, pack_signs
from reproductions.common.training import restore, snapshot
from reproductions.transformer import lm
from reproductions.transformer.gpt import GPT

MODES = ("paired", "bitnet", "fp")


@dataclass
class Config(lm.Config):
    """The GPT of transformer/lm.py (sizes, optimiser, schedule); `mode` says which models train."""

    mode: str = "paired"          # paired | bitnet | fp


class BitNetLM(lm.LanguageModel):
    """The trained model (BitNet in modes paired and bitnet, the Transformer in mode fp) as the
    language model the evaluators score, with what the `low_bit` evaluator measures:
    `low_bit_variants()` (the full-precision twin and its post-training binarisation),
    `weight_storage()` (bytes of the projections stored at 1 bit, fp16 and fp32) and
    `energy_estimates()` (Table 1)."""

    def __init__(self, gpt: GPT, cfg: Config, twin: lm.LanguageModel | None = None):
        super().__init__(gpt, cfg)
        self.twin = twin
        self.is_bitnet = any(isinstance(m, BitLinear) for m in gpt.modules())

    # -- save / load (the tied output layers are not stored) ----------------------------------
    TIED = ("gpt.lm_head.weight", "twin.gpt.lm_head.weight")

    def save(self, path) -> None:
        state = {k: v for k, v in self.state_dict().items() if k not in self.TIED}
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))

    def load(self, path) -> "BitNetLM":
        result = self.load_state_dict(load_file(str(path)), strict=False)
        missing = set(result.missing_keys) - set(self.TIED)
        if missing or result.unexpected_keys:
            raise KeyError(f"{path}: not this model's checkpoint (missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(result.unexpected_keys)[:5]})")
        return self

    # -- what the low_bit evaluator measures ----------------------------------------------------
    def low_bit_variants(self) -> dict[str, lm.LanguageModel]:
        """The models scored beside this one on the same tokens: `fp` (the full-precision twin,
        trained on the same batches) and `ptq` (it, binarised after training); in mode fp, `ptq`
        is this model binarised after training."""
        fp = self if not self.is_bitnet else self.twin
        if fp is None:
            return {}
        ptq = copy.deepcopy(fp)
        if isinstance(ptq, BitNetLM):
            ptq.twin = None
        binarise_after_training(ptq.gpt)
        return {"ptq": ptq} if fp is self else {"fp": fp, "ptq": ptq}

    def weight_storage(self) -> dict[str, int]:
        """Bytes, measured as safetensors files in memory, of this model's projections (every
        linear layer of the blocks) stored as 1-bit signs packed eight per byte with one fp16
        scale beta per matrix, and as fp16 and fp32; and of the whole model with the rest
        (embeddings, norms) in fp16 beside the packed projections or the fp16 ones."""
        packed, half, single, rest = {}, {}, {}, {}
        projections = {f"{name}.weight" for name, m in self.gpt.named_modules()
                       if isinstance(m, nn.Linear) and not name.endswith("lm_head")}
        for name, w in self.gpt.state_dict().items():
            w = w.detach().cpu()
            if name in projections:
                signs, beta = binarise(w.float())
                packed[name + ".signs"] = pack_signs(signs)
                packed[name + ".beta"] = beta.reshape(1).half()
                half[name], single[name] = w.half().contiguous(), w.float().contiguous()
            elif name != "lm_head.weight":   # tied to the token embedding
                rest[name] = w.half().contiguous()
        shapes = {name: "x".join(map(str, self.gpt.state_dict()[name].shape)) for name in projections}

        def size(tensors, metadata=None) -> int:
            return len(save(tensors, metadata=metadata)) if tensors else 0

        return {"weight_bytes_packed": size(packed, shapes), "weight_bytes_fp16": size(half),
                "weight_bytes_fp32": size(single), "model_bytes_packed": size({**packed, **rest}, shapes),
                "model_bytes_fp16": size({**half, **rest})}

    def energy_estimates(self) -> dict[str, float]:
        """Table 1 of the paper, from `energy.py`: joules per forward pass of 512 tokens."""
        return energy.table_1()


def _gpt(cfg: Config, bitnet: bool) -> GPT:
    gcfg = lm.gpt_config(cfg)
    position = lm._choose(cfg.positions, cfg.position, "position")(gcfg)
    attend = lm._choose(cfg.attentions, cfg.attention, "attention")
    return GPT(gcfg, position=position, attend=attend, linear=bit_linear if bitnet else nn.Linear)


def build(cfg: Config) -> BitNetLM:
    """The untrained model of `cfg.mode`: a BitNet GPT (with its full-precision twin in mode
    paired, initialised from the generator state that follows the BitNet's), or the Transformer."""
    if cfg.mode not in MODES:
        raise ValueError(f"config field 'mode': {cfg.mode!r} is not one of {list(MODES)}")
    if cfg.mode == "fp":
        return BitNetLM(_gpt(cfg, bitnet=False), cfg)
    bitnet = _gpt(cfg, bitnet=True)
    twin = lm.LanguageModel(_gpt(cfg, bitnet=False), cfg) if cfg.mode == "paired" else None
    return BitNetLM(bitnet, cfg, twin)


def train(cfg: Config, run) -> BitNetLM:
    """nanoGPT's loop of transformer/lm.py (AdamW, warm-up and cosine decay, clipping) over the
    models of `cfg.mode` in lock step: each step draws one batch and updates every model on it."""
    data = code_corpus.token_split("train", cfg.tokenizer, cfg.bpe_vocab_size, cfg.val_percent)
    agent = build(cfg).to(run.device)
    models = {"": agent} if agent.twin is None else {"": agent, "fp_": agent.twin}
    for m in models.values():   # the twin is scored by the evaluator, never trained through the agent's loss
        m.train()
    opts = {prefix: lm.optimizer(m.gpt, cfg) for prefix, m in models.items()}
    batches = torch.Generator().manual_seed(run.seed)
    parts = {"agent": agent, "batches": batches, **{f"opt{p}": o for p, o in opts.items()}}
    step = 0
    if (resumed := run.resume_state()) is not None:
        step = restore(resumed, parts)["step"]
    run.progress(cfg.steps)
    while step < cfg.steps:
        # ALGO LOGIC: one step of each model on the same batch
        x, y = code_corpus.random_batch(data.tokens, cfg.batch_size, cfg.block_size, batches)
        x, y = x.to(run.device), y.to(run.device)
        logs = {}
        for prefix, model in models.items():
            opt = opts[prefix]
            for group in opt.param_groups:
                group["lr"] = lm.lr_at(step, cfg)
            _, loss = model.gpt(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.gpt.parameters(), cfg.grad_clip)
            opt.step()
            logs[f"{prefix}train_loss"], logs[f"{prefix}grad_norm"] = loss.item(), grad_norm.item()
        step += 1
        # TRY NOT TO MODIFY: logging, progress, checkpoints
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, **logs, lr=lm.lr_at(step - 1, cfg))
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    agent.eval()
    return agent


def data_fingerprint(cfg: Config) -> str:
    return lm.data_fingerprint(cfg)


def required_data(cfg: Config) -> list[str]:
    return lm.required_data(cfg)


def dry_run_step(agent: BitNetLM, cfg: Config) -> dict[str, float]:
    """One AdamW step of each model on two windows of random tokens."""
    x = torch.randint(agent.gpt.cfg.vocab_size, (2, min(cfg.block_size, 64)))
    out = {}
    for prefix, model in {"": agent, "fp_": agent.twin}.items():
        if model is None:
            continue
        opt = lm.optimizer(model.gpt, cfg)
        _, loss = model.gpt(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        out[f"{prefix}loss"] = loss.item()
    return out

