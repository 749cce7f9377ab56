"""The peer arm: Hugging Face PEFT's LoRA (`peft.inject_adapter_in_model` with a `LoraConfig`) on
the same pre-trained GPT, the same rank, alpha, target projections, dropout, data and schedule as
ours (`finetune.py`); only the adapter layer is PEFT's. PEFT draws A itself from torch's global
generator (kaiming-uniform, as ours), so its A differ from ours at the same seed."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from reproductions.lora import finetune
from reproductions.lora.finetune import Config, data_fingerprint, dry_run_step, required_data
from reproductions.transformer.gpt import GPT


def lora_config(cfg: Config):
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=finetune.targets(cfg),
                      lora_dropout=cfg.lora_dropout, bias="none", init_lora_weights=True)


def adapt_peft(gpt: GPT, cfg: Config, generator: torch.Generator) -> None:
    """PEFT's injection; its A come from torch's global generator, which we seed from `generator`
    inside a forked random state (so the caller's random state is untouched, as with ours)."""
    from peft import inject_adapter_in_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        inject_adapter_in_model(lora_config(cfg), gpt)
    for name, p in gpt.named_parameters():  # PEFT freezes the base; say so explicitly, as ours does
        p.requires_grad_(".lora_A." in name or ".lora_B." in name)


def _peft_layers(model: nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


class PeftFineTunedLM(finetune.FineTunedLM):
    """Our agent, with PEFT's layers merged, unmerged and removed by PEFT's own methods."""

    @staticmethod
    def is_adapter(name: str) -> bool:
        return ".lora_A." in name or ".lora_B." in name

    def merge(self) -> None:
        for m in _peft_layers(self.gpt):
            m.merge()

    def unmerge(self) -> None:
        for m in _peft_layers(self.gpt):
            m.unmerge()

    def plain(self) -> nn.Module:
        plain = copy.deepcopy(self.gpt)
        for name, m in list(plain.named_modules()):
            if m in _peft_layers(plain):
                m.merge()
                parent, _, child = name.rpartition(".")
                setattr(plain.get_submodule(parent) if parent else plain, child, m.get_base_layer())
        for p in plain.parameters():
            p.requires_grad_(False)
        return plain


def build(cfg: Config) -> PeftFineTunedLM:
    return finetune.build(cfg, adapt_peft, PeftFineTunedLM)


def train(cfg: Config, run) -> PeftFineTunedLM:
    return finetune.train(cfg, run, adapt_peft, PeftFineTunedLM)


__all__ = ["Config", "build", "train", "data_fingerprint", "dry_run_step", "required_data"]
