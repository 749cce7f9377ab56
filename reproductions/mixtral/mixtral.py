"""Mixtral of Experts (arXiv 2401.04088) at small scale: the GPT with the sparse MoE block of
`moe.py` in every layer, against a dense GPT whose SwiGLU feed-forward has the same *active*
parameters (hidden size top_k * expert_hidden), trained on the same tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import Field

from reproductions.mixtral.moe import SparseMoE, SwiGLU
from reproductions.transformer import lm


@dataclass
class Config(lm.Config):
    ffn: str = "moe"               # moe | dense (SwiGLU of hidden top_k * expert_hidden)
    n_experts: Annotated[int, Field(gt=0)] = 8
    top_k: Annotated[int, Field(gt=0)] = 2
    expert_hidden: Annotated[int, Field(gt=0)] = 128
    aux_loss_coef: Annotated[float, Field(ge=0)] = 0.01  # weight of the load-balancing loss (Switch Transformer's alpha)


class MoELanguageModel(lm.LanguageModel):
    """The language model, plus what its MoE layers saw: per-expert token shares."""

    def moe_layers(self) -> list[SparseMoE]:
        return [m for m in self.gpt.modules() if isinstance(m, SparseMoE)]

    def active_parameters(self) -> int:
        """Parameters one token passes through: all but the unselected experts."""
        idle = sum((moe.n_experts - moe.top_k) * sum(p.numel() for p in moe.experts[0].parameters())
                   for moe in self.moe_layers())
        return self.num_parameters() - idle

    def reset_statistics(self) -> None:
        for moe in self.moe_layers():
            moe.expert_counts.zero_()

    def statistics(self) -> dict[str, float]:
        """Per-expert share of the routed token-slots since the last reset: the largest and
        smallest over all layers and experts, and each expert's share averaged over layers."""
        layers = self.moe_layers()
        if not layers:
            return {}
        shares = torch.stack([moe.expert_counts.double() / moe.expert_counts.sum().clamp(min=1) for moe in layers])
        out = {"expert_share_max": shares.max().item(), "expert_share_min": shares.min().item()}
        out.update({f"expert_share_{i}": s.item() for i, s in enumerate(shares.mean(dim=0))})
        return out


def feed_forward(cfg: Config):
    if cfg.ffn == "moe":
        return lambda gcfg, linear: SparseMoE(gcfg.n_embd, cfg.expert_hidden, cfg.n_experts, cfg.top_k, linear)
    if cfg.ffn == "dense":
        return lambda gcfg, linear: SwiGLU(gcfg.n_embd, cfg.top_k * cfg.expert_hidden, linear)
    raise ValueError(f"config field 'ffn': {cfg.ffn!r} is not 'moe' or 'dense'")


def build(cfg: Config) -> MoELanguageModel:
    return MoELanguageModel(lm.build(cfg, ffn=feed_forward(cfg)).gpt, cfg)


def _aux_loss(model: MoELanguageModel) -> torch.Tensor:
    return sum(moe.aux_loss for moe in model.moe_layers())


def train(cfg: Config, run) -> MoELanguageModel:
    model = build(cfg)
    run.log(0, total_parameters=model.num_parameters(), active_parameters=model.active_parameters())

    def logs(m: MoELanguageModel) -> dict[str, float]:
        stats = {"train_" + k: v for k, v in m.statistics().items() if k in ("expert_share_max", "expert_share_min")}
        if m.moe_layers():
            stats["aux_loss"] = _aux_loss(m).item() / len(m.moe_layers())
        m.reset_statistics()
        return stats

    aux = (lambda m: cfg.aux_loss_coef * _aux_loss(m)) if cfg.ffn == "moe" else None
    return lm.train(cfg, run, model, aux_loss=aux, extra_logs=logs)
