"""Mixtral's sparse mixture-of-experts feed-forward block (Jiang et al., arXiv 2401.04088, §2.1),
plugged into the GPT of `reproductions/transformer/gpt.py` through its `ffn` factory.

- eq. (1)  y = sum_{i=0}^{n-1} G(x)_i * E_i(x)
- eq. (2)  G(x) = Softmax(TopK(x * W_g)): the softmax runs over the K selected router logits only
           (TopK sets the others to -inf), so the K gates of a token sum to one;
- eq. (3)  y = sum_{i=0}^{n-1} Softmax(Top2(x * W_g))_i * SwiGLU_i(x): each expert is Mistral's
           SwiGLU feed-forward, w2(silu(w1 x) * w3 x); n = 8 experts, K = 2.

The paper gives no training loss for the router. As is standard for such models (Switch
Transformer, Fedus et al. 2021, eq. 4-6; the load-balancing term of the public Mixtral code), an
auxiliary loss n * sum_i f_i * P_i pushes routing towards uniform: f_i is the share of the
token-slots routed to expert i, P_i the mean router probability (softmax over all n logits) of
expert i. It equals 1 when routing is uniform.

Routing is a discrete choice, so a last-bit difference in the router logits (another CPU's matmul
kernel, another summation order) can flip which experts a token reaches and send two runs of the
same code apart. The router logits are therefore computed in float64 (float32 on Apple's MPS, which
has no float64), and the top K are taken by a stable sort, so a tie goes to the lower expert index.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from reproductions.transformer.layers import LinearFactory


class SwiGLU(nn.Module):
    """Mistral's feed-forward: w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, d_model: int, hidden: int, linear: LinearFactory = nn.Linear):
        super().__init__()
        self.w1, self.w3 = linear(d_model, hidden, False), linear(d_model, hidden, False)
        self.w2 = linear(hidden, d_model, False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def load_balancing_loss(router_logits: torch.Tensor, selected: torch.Tensor, n_experts: int) -> torch.Tensor:
    """n * sum_i f_i * P_i over the tokens of a batch (router_logits: (tokens, n); selected: (tokens, K))."""
    f = torch.bincount(selected.flatten(), minlength=n_experts).to(router_logits.dtype) / selected.numel()
    p = torch.softmax(router_logits, dim=-1).mean(dim=0)
    return n_experts * (f * p).sum()


class SparseMoE(nn.Module):
    def __init__(self, d_model: int, hidden: int, n_experts: int = 8, top_k: int = 2, linear: LinearFactory = nn.Linear):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must lie in 1..n_experts={n_experts}")
        self.n_experts, self.top_k = n_experts, top_k
        self.gate = nn.Linear(d_model, n_experts, bias=False)  # W_g
        self.experts = nn.ModuleList(SwiGLU(d_model, hidden, linear) for _ in range(n_experts))
        self.aux_loss = torch.zeros(())
        self.register_buffer("expert_counts", torch.zeros(n_experts, dtype=torch.long), persistent=False)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(router_logits, gates, selected): eq. (2) for tokens x of shape (tokens, d_model), with
        float64 router logits and ties to the lower expert index (see above)."""
        wide = torch.float32 if x.device.type == "mps" else torch.float64
        router_logits = F.linear(x.to(wide), self.gate.weight.to(wide))
        selected = router_logits.argsort(dim=-1, descending=True, stable=True)[:, : self.top_k]
        gates = torch.softmax(router_logits.gather(-1, selected), dim=-1)
        return router_logits, gates.to(x.dtype), selected

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        router_logits, gates, selected = self.route(x)
        y = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):  # each expert runs on its tokens only (the sparsity)
            token, slot = (selected == i).nonzero(as_tuple=True)
            if token.numel():
                y.index_add_(0, token, gates[token, slot, None] * expert(x[token]))
        self.aux_loss = load_balancing_loss(router_logits, selected, self.n_experts).to(x.dtype)
        self.expert_counts += torch.bincount(selected.flatten(), minlength=self.n_experts)
        return y.reshape(shape)
