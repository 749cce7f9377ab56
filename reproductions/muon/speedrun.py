"""The NanoGPT speedrun setting of the post's headline result: GPT-2 small (124M) on FineWeb to a
validation loss of 3.28, trained with Muon on the hidden matrices and AdamW on the embedding/head.

The configuration is the modded-nanogpt record `records/track_1_short/2024-10-10_Muon` (the
'Muon improvements' record of 10/11/24, 22.3 minutes on 8xH100; its log ends at step 6,200 with
val_loss 3.2785): 12 layers, 12 heads, d 768, GPT-2's 50,257-token vocabulary, rotary positions
(`reproductions/rope`), tied embedding and head; batches of 512 sequences of 1,024 tokens (8 GPUs x
64, here gradient accumulation over `device_batch_size`), 6,200 steps; a trapezoidal schedule (no
warm-up, constant, then linear decay to zero over the last 1,800 steps); Muon with lr 0.00036,
momentum 0.95, Nesterov, 5 Newton-Schulz steps in bfloat16 and the update scaled by
sqrt(max(fan_out, fan_in)) (scaling 'record'); AdamW on the embedding/head with lr 0.0036, betas
(0.9, 0.95), no weight decay; bfloat16 autocast on the GPU. Validation: the first 10,485,760 tokens of
the validation shard (the `fineweb_loss` evaluator; every `val_every` steps a curve on `val_tokens`).

Data: GPT-2-tokenised FineWeb shards under `data_root` (`evals/tasks/fineweb.py`), read in order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from evals.contract import SafetensorsModule
from evals.tasks import fineweb
from reproductions.common.training import restore, snapshot
from reproductions.muon import hybrid
from reproductions.muon.hybrid import MuonSettings
from reproductions.rope.rope import RotaryPositions
from reproductions.transformer.gpt import GPT, GPTConfig


@dataclass
class Config(MuonSettings):
    """The record's hyper-parameters (train_gpt2.py's `Hyperparameters` and its optimisers)."""

    data_root: str = "data/fineweb10B"
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024          # sequence_length
    batch_size: int = 512           # sequences per step, all devices (8 x 64)
    device_batch_size: int = 64     # sequences per forward pass (gradient accumulation makes up the rest)
    steps: int = 6200               # num_iterations
    warmup_steps: int = 0           # warmup_iters
    warmdown_steps: int = 1800      # warmdown_iters: linear decay to zero over the last steps
    lr: float = 0.0036              # AdamW on the embedding / head (learning_rate)
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.0
    muon_lr: float = 0.00036        # 0.1 * learning_rate
    momentum: float = 0.95
    ns_dtype: str = "bfloat16"
    scaling: str = "record"         # sqrt(max(fan_out, fan_in))
    autocast: bool = True           # bfloat16 autocast on CUDA
    val_every: int = 125            # val_loss_every (a curve; the scored value is fineweb_loss's)
    val_tokens: int = 1_048_576     # of the curve (the evaluator scores 10,485,760)
    log_every: int = 25


class SpeedrunGPT(SafetensorsModule):
    """The project's GPT with rotary positions: a `LanguageModel` of GPT-2 token ids (the shards are
    tokenised already; GPT-2's tokenizer itself is not bundled, so `tokenizer` is None)."""

    tokenizer = None
    tokenizer_name = "gpt2"
    bpe_vocab_size = fineweb.VOCAB_SIZE
    val_percent = 0  # FineWeb's own validation shard, not a share of the code corpus

    def __init__(self, cfg: Config):
        super().__init__()
        gcfg = GPTConfig(vocab_size=fineweb.VOCAB_SIZE, block_size=cfg.block_size, n_layer=cfg.n_layer,
                         n_head=cfg.n_head, n_embd=cfg.n_embd)
        self.gpt = GPT(gcfg, position=RotaryPositions(gcfg))

    @property
    def block_size(self) -> int:
        return self.gpt.cfg.block_size

    def forward(self, idx, targets=None):
        return self.gpt(idx, targets)

    def save(self, path) -> None:
        state = {k: v for k, v in self.state_dict().items() if k != "gpt.lm_head.weight"}  # tied to wte
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))

    def load(self, path) -> "SpeedrunGPT":
        result = self.load_state_dict(load_file(str(path)), strict=False)
        if set(result.missing_keys) - {"gpt.lm_head.weight"} or result.unexpected_keys:
            raise KeyError(f"{path}: not this model's checkpoint (missing {result.missing_keys[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]})")
        return self


def build(cfg: Config) -> SpeedrunGPT:
    return SpeedrunGPT(cfg)


def multiplier(step: int, cfg: Config) -> float:
    """The record's `get_lr`: linear warm-up, constant, then linear warm-down to zero at `steps`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if step < cfg.steps - cfg.warmdown_steps:
        return 1.0
    return (cfg.steps - step) / cfg.warmdown_steps


def optimizers(model: SpeedrunGPT, cfg: Config) -> list[torch.optim.Optimizer]:
    """Muon on the blocks' matrices; AdamW (the record's betas, no decay) on the tied embedding/head and
    the LayerNorm gains (the record's RMSNorm has none)."""
    if cfg.optimizer == "adamw":
        return [torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)]
    return hybrid.hybrid(model, cfg, lambda rest: torch.optim.AdamW(rest, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                                                    weight_decay=cfg.weight_decay))


@torch.no_grad()
def curve_loss(model: SpeedrunGPT, cfg: Config, device) -> float:
    model.eval()
    losses = [F.cross_entropy(model(x.to(device))[0].flatten(0, 1).float(), y.flatten().to(device)).item()
              for x, y in fineweb.validation_windows(cfg.data_root, cfg.val_tokens, cfg.block_size, cfg.device_batch_size)]
    model.train()
    return sum(losses) / len(losses)


def train(cfg: Config, run) -> SpeedrunGPT:
    if cfg.batch_size % cfg.device_batch_size:
        raise ValueError(f"batch_size={cfg.batch_size} is not a multiple of device_batch_size={cfg.device_batch_size}")
    accumulate = cfg.batch_size // cfg.device_batch_size
    model = build(cfg).to(run.device)
    opts = optimizers(model, cfg)
    parts = {"model": model, **{f"opt{i}": o for i, o in enumerate(opts)}}
    step = 0
    if (resumed := run.resume_state()) is not None:
        step = restore(resumed, parts)["step"]
    batches = fineweb.train_windows(cfg.data_root, cfg.device_batch_size, cfg.block_size, start_batch=step * accumulate)
    amp = cfg.autocast and run.device.type == "cuda"
    run.progress(cfg.steps)
    model.train()
    while step < cfg.steps:
        hybrid.set_rates(opts, multiplier(step, cfg), cfg.lr, cfg)
        total = 0.0
        for _ in range(accumulate):
            x, y = next(batches)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                _, loss = model(x.to(run.device), y.to(run.device))
            (loss / accumulate).backward()
            total += loss.detach()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        step += 1
        logs = {}
        if step % cfg.log_every == 0 or step == cfg.steps:
            logs["train_loss"] = (total / accumulate).item()
        if step % cfg.val_every == 0 or step == cfg.steps:
            logs["heldout_loss"] = curve_loss(model, cfg, run.device)
        if logs:
            run.log(step, **logs)
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    model.eval()
    return model


def dry_run_step(model: SpeedrunGPT, cfg: Config) -> dict[str, float]:
    """One step of both optimisers on two windows of 64 real training tokens; on the CPU the
    Newton-Schulz iteration runs in float32 (bfloat16 products there take minutes at this size)."""
    x, y = next(fineweb.train_windows(cfg.data_root, 2, 64))
    on_cpu = next(model.parameters()).device.type == "cpu"
    opts = optimizers(model, dataclasses.replace(cfg, ns_dtype="float32") if on_cpu else cfg)
    _, loss = model(x, y)
    loss.backward()
    for opt in opts:
        opt.step()
    return {"loss": loss.item()}


def required_data(cfg: Config) -> list[str]:
    return fineweb.missing(cfg.data_root)


def data_fingerprint(cfg: Config) -> str:
    return fineweb.fingerprint(cfg.data_root)
