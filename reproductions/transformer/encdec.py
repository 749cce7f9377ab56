"""The Transformer of "Attention Is All You Need" (arXiv 1706.03762): the encoder-decoder, its
training loss and learning-rate schedule, and beam search.

- §3.1      N encoder and N decoder layers; each sub-layer is post-LN: LayerNorm(x + Sublayer(x)),
            with dropout on the sub-layer's output (§5.4);
- §3.4      one embedding matrix shared by source, target and the pre-softmax projection,
            multiplied by sqrt(d_model) at the input;
- §3.5      sinusoidal positions added to the embeddings (or none: the ablation arm);
- §5.3      Adam(beta1 0.9, beta2 0.98, eps 1e-9) with eq. (3):
            lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5);
- §5.4      label smoothing eps_ls = 0.1;
- §6.1      beam search, beam 4, length penalty alpha = 0.6 (Wu et al. 2016: ((5 + |Y|) / 6)^alpha),
            maximum output length input length + 50, stopping early when possible.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from reproductions.transformer.layers import FeedForward, MultiHeadAttention, sdpa_attention, sinusoidal_table

PAD, BOS, EOS = 0, 1, 2


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, sdpa_attention)
        self.ffn = FeedForward(d_model, d_ff, F.relu)
        self.norm_1, self.norm_2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, src_mask):
        x = self.norm_1(x + self.dropout(self.self_attn(x, mask=src_mask)))
        return self.norm_2(x + self.dropout(self.ffn(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, sdpa_attention)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, sdpa_attention)
        self.ffn = FeedForward(d_model, d_ff, F.relu)
        self.norm_1, self.norm_2, self.norm_3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, y, memory, src_mask):
        y = self.norm_1(y + self.dropout(self.self_attn(y, causal=True)))
        y = self.norm_2(y + self.dropout(self.cross_attn(y, memory=memory, mask=src_mask)))
        return self.norm_3(y + self.dropout(self.ffn(y)))


class Transformer(nn.Module):
    def __init__(self, vocab_size: int, d_model: int = 512, n_heads: int = 8, n_layers: int = 6, d_ff: int = 2048,
                 dropout: float = 0.1, positional: str = "sinusoidal", max_len: int = 1024):
        super().__init__()
        if positional not in ("sinusoidal", "none"):
            raise ValueError(f"positional {positional!r}: expected 'sinusoidal' or 'none'")
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=d_model ** -0.5)
        pe = sinusoidal_table(max_len, d_model) if positional == "sinusoidal" else torch.zeros(max_len, d_model)
        self.register_buffer("pe", pe, persistent=False)
        self.encoder = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)

    def _embed(self, tokens):
        return self.dropout(self.embedding(tokens) * math.sqrt(self.d_model) + self.pe[: tokens.size(1)])

    def encode(self, src):
        src_mask = (src != PAD)[:, None, None, :]  # (batch, 1, 1, src_len): keys a query may see
        x = self._embed(src)
        for layer in self.encoder:
            x = layer(x, src_mask)
        return x, src_mask

    def decode(self, tgt_in, memory, src_mask):
        y = self._embed(tgt_in)
        for layer in self.decoder:
            y = layer(y, memory, src_mask)
        return y @ self.embedding.weight.t()  # the shared pre-softmax projection (§3.4)

    def forward(self, src, tgt_in):
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, eps: float, ignore_index: int = PAD) -> torch.Tensor:
    """§5.4: cross-entropy against (1 - eps) * one_hot(target) + eps / V, averaged over non-pad tokens."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    uniform = -logp.mean(dim=-1)
    keep = target != ignore_index
    return (((1.0 - eps) * nll + eps * uniform) * keep).sum() / keep.sum()


def noam_lr(step: int, d_model: int, warmup_steps: int, factor: float = 1.0) -> float:
    """Eq. (3), for step >= 1."""
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


def length_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, beam_size: int = 4, alpha: float = 0.6,
                max_len_offset: int = 50) -> list[int]:
    """Decode one source sentence (1, src_len); returns the best hypothesis without BOS/EOS.

    Scores are summed log-probabilities; finished hypotheses are ranked by score / lp(length).
    The search stops when no live beam can still beat the best finished one (scores only fall).
    """
    memory, src_mask = model.encode(src)
    max_len = src.size(1) + max_len_offset
    beams = torch.full((1, 1), BOS, dtype=torch.long, device=src.device)
    scores = torch.zeros(1, device=src.device)
    finished: list[tuple[float, list[int]]] = []
    for step in range(1, max_len + 1):
        n = beams.size(0)
        logits = model.decode(beams, memory.expand(n, -1, -1), src_mask.expand(n, -1, -1, -1))[:, -1]
        cand = (scores[:, None] + torch.log_softmax(logits.float(), dim=-1)).flatten()
        top, idx = cand.topk(min(2 * beam_size, cand.numel()))
        vocab = logits.size(-1)
        new_beams, new_scores = [], []
        for score, i in zip(top.tolist(), idx.tolist()):
            prev, token = divmod(i, vocab)
            if token == EOS:
                finished.append((score / length_penalty(step, alpha), beams[prev, 1:].tolist()))
            else:
                new_beams.append(torch.cat([beams[prev], beams.new_tensor([token])]))
                new_scores.append(score)
            if len(new_beams) == beam_size:
                break
        if not new_beams:
            break
        beams, scores = torch.stack(new_beams), torch.tensor(new_scores, device=src.device)
        best_finished = max((s for s, _ in finished), default=-math.inf)
        # A live beam's score can only fall, and its penalty is at most lp(max_len).
        if finished and scores.max().item() / length_penalty(max_len, alpha) <= best_finished:
            break
    if not finished:
        finished = [(s / length_penalty(max_len, alpha), b[1:].tolist()) for s, b in zip(scores.tolist(), beams)]
    return max(finished, key=lambda f: f[0])[1]
