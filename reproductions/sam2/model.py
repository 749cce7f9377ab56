"""SAM 2's model (Ravi et al., arXiv 2408.00714, Section 4 and Figure 3), from scratch.

For each frame t of a video, streaming:

    x_t      = image_encoder(frame_t)                    the unconditioned frame embedding (our ViT, once per frame)
    x_t'     = memory_attention(x_t, bank_t)             self-attention, then cross-attention to the memory bank
               (the first prompted frame, with an empty bank: x_t + no_mem_embed)
    m_t, s_t, p_t = mask_decoder(x_t' + dense(prompts_t), sparse(prompts_t))
                                                          mask logits, object score (occlusion head), object pointer
    M_t      = memory_encoder(x_t, m_t)                  the frame's memory: its mask, downsampled, fused with x_t
    bank_{t+1} = {M_s for the prompted frames s} + {M_s for the `num_recent` latest other frames}
                 + {p_s for up to `max_pointers` earlier frames}, each with a temporal position encoding

- Image encoder: our ViT's patch tokens (reproductions/vit), a 1x1 neck to d; high-resolution
  features for the decoder's upsampling (Hiera's stride-4 and stride-8 stages in the paper) come
  from a small convolutional stem on the frame.
- Prompt encoder (SAM): points (positive, negative) and boxes (two corners) as sparse tokens, a
  random-Fourier position encoding plus a learned embedding per label; padding slots take
  'not a point'. A dense map of the clicks (one Gaussian bump per click, a channel per label),
  downsampled by convolutions like SAM's mask prompt, is added to the frame embedding.
- Mask decoder (SAM's two-way transformer): output tokens [object-score token, mask token] and the
  prompt tokens attend to themselves and to the image, the image to the tokens; the mask is the
  dot product of an MLP of the mask token with the upsampled embedding; an MLP of the
  object-score token predicts whether the object is visible (SAM 2's occlusion head; when it says
  not, the frame's mask is empty and the pointer is the learned no-object pointer); an MLP of the
  mask token is the object pointer.
- Memory encoder: the mask's sigmoid, scaled by 20 and shifted by -10 (SAM 2's), downsampled by
  strided convolutions, added to a projection of the unconditioned frame embedding, fused by two
  ConvNeXt-style blocks, projected to the memory dimension.
- Memory attention: `memory_layers` pre-LN blocks (self-attention, cross-attention to the bank,
  MLP); memory keys carry spatial position encodings and a learned temporal encoding (by distance
  in frames, one slot for prompted frames); object pointers of width d are split into d/mem_dim
  tokens, as SAM 2 does.

`use_memory=False` is the no-memory ablation: every frame is segmented on its own (frame
embedding + no_mem_embed), prompted by every click given up to it (stale clicks carried forward).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.contract import SafetensorsModule
from reproductions.vit.model import ViT

PAD, NEG, POS, BOX_TL, BOX_BR = -1, 0, 1, 2, 3  # point labels, as SAM's prompt encoder numbers them


class LayerNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - u) / torch.sqrt(s + self.eps) + self.bias[:, None, None]


class MLP(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, layers: int):
        super().__init__()
        dims = [d_in] + [d_hidden] * (layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class Attention(nn.Module):
    """Multi-head attention with separate q, k, v inputs, an internal width (SAM's downsampling of
    the cross-attention) and keys and values of another width (the memory's)."""

    def __init__(self, dim: int, heads: int, internal: int | None = None, kv_dim: int | None = None):
        super().__init__()
        internal = internal or dim
        if internal % heads:
            raise ValueError(f"Attention: internal width {internal} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, internal)
        self.k = nn.Linear(kv_dim or dim, internal)
        self.v = nn.Linear(kv_dim or dim, internal)
        self.out = nn.Linear(internal, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None):
        b, n, _ = q.shape
        split = lambda x: x.view(b, x.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        mask = None if key_mask is None else key_mask[:, None, None, :]          # True: attend
        x = F.scaled_dot_product_attention(split(self.q(q)), split(self.k(k)), split(self.v(v)), attn_mask=mask)
        return self.out(x.transpose(1, 2).reshape(b, n, -1))


class RandomFourierPE(nn.Module):
    """SAM's position encoding: [sin, cos](2 pi (2c - 1) G) for coordinates c in [0, 1]^2 (row, column)
    and a fixed Gaussian matrix G, 2 x width/2."""

    def __init__(self, width: int, scale: float = 1.0):
        super().__init__()
        self.register_buffer("gaussian", scale * torch.randn(2, width // 2))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        x = (2 * coords - 1) @ self.gaussian * (2 * math.pi)
        return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)

    def grid(self, size: int) -> torch.Tensor:
        """size*size x width, row-major, at the cell centres."""
        c = (torch.arange(size, device=self.gaussian.device, dtype=torch.float32) + 0.5) / size
        rows, cols = torch.meshgrid(c, c, indexing="ij")
        return self.encode(torch.stack([rows, cols], -1).view(-1, 2))


# -- image encoder -------------------------------------------------------------------------------------
class ImageEncoder(nn.Module):
    """Our ViT's patch tokens (a g x g grid, g = image_size / patch_size) and a neck to d; a conv stem's
    features at 2x and 4x the grid's resolution for the decoder's upsampling."""

    def __init__(self, image_size: int, patch_size: int, vit_dim: int, vit_depth: int, vit_heads: int, dim: int):
        super().__init__()
        if patch_size % 4:
            raise ValueError(f"ImageEncoder: patch_size {patch_size} must be a multiple of 4 (the decoder upsamples 4x)")
        self.vit = ViT(image_size, patch_size, 3, 1, vit_dim, vit_depth, vit_heads, 4 * vit_dim)
        self.vit.head = nn.Identity()
        self.grid = image_size // patch_size
        self.neck = nn.Sequential(nn.Conv2d(vit_dim, dim, 1), LayerNorm2d(dim))
        stride = patch_size // 4  # the stem's first map is at 4x the grid (SAM 2's stride-4 feature)
        self.stem0 = nn.Sequential(nn.Conv2d(3, dim // 8, 3, stride=stride, padding=1), nn.GELU(),
                                   nn.Conv2d(dim // 8, dim // 8, 3, padding=1))
        self.stem1 = nn.Sequential(nn.GELU(), nn.Conv2d(dim // 8, dim // 4, 3, stride=2, padding=1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        tokens = self.vit.patch_tokens(images)                                     # N x g*g x vit_dim
        x = tokens.transpose(1, 2).reshape(len(images), -1, self.grid, self.grid)
        s0 = self.stem0(images * 2 - 1)
        return self.neck(x), [s0, self.stem1(s0)]                                 # N x d x g x g; 4x, 2x


# -- prompt encoder -------------------------------------------------------------------------------------
class PromptEncoder(nn.Module):
    def __init__(self, dim: int, image_size: int, grid: int, dense_clicks: bool, click_sigma: float):
        super().__init__()
        self.image_size, self.grid, self.dense_clicks, self.click_sigma = image_size, grid, dense_clicks, click_sigma
        self.pe = RandomFourierPE(dim)
        self.label_embed = nn.Embedding(4, dim)        # negative, positive, box corner 1, box corner 2
        self.not_a_point = nn.Embedding(1, dim)
        layers, c, size = [], 2, image_size
        while size > grid:  # SAM's mask-prompt downscaling, to the grid
            out = dim if size // 2 == grid else max(4, dim // 4)
            layers += [nn.Conv2d(c, out, 2, stride=2), LayerNorm2d(out), nn.GELU()]
            c, size = out, size // 2
        self.dense = nn.Sequential(*layers, nn.Conv2d(c, dim, 1))

    def sparse(self, points: torch.Tensor) -> torch.Tensor:
        """points N x P x 3 (row, column, label) -> N x P x d tokens."""
        coords = (points[..., :2] + 0.5) / self.image_size
        label = points[..., 2].long()
        pad = label == PAD
        tokens = self.pe.encode(coords) + self.label_embed(label.clamp(min=0))
        return torch.where(pad[..., None], self.not_a_point.weight.expand_as(tokens), tokens)

    def click_map(self, points: torch.Tensor) -> torch.Tensor:
        """N x 2 x H x W: a Gaussian bump (sigma `click_sigma` pixels) per negative / positive click."""
        n = len(points)
        r = torch.arange(self.image_size, device=points.device, dtype=torch.float32)
        dy = (r[None, None, :] - points[..., 0:1]) ** 2                   # N x P x H
        dx = (r[None, None, :] - points[..., 1:2]) ** 2                   # N x P x W
        bumps = torch.exp(-(dy[..., :, None] + dx[..., None, :]) / (2 * self.click_sigma ** 2))  # N x P x H x W
        label = points[..., 2]
        maps = [(bumps * (label == lab)[..., None, None].float()).amax(1) if points.shape[1] else
                torch.zeros(n, self.image_size, self.image_size, device=points.device) for lab in (NEG, POS)]
        return torch.stack(maps, 1)

    def dense_embedding(self, points: torch.Tensor) -> torch.Tensor:
        """N x d x g x g: the click map's embedding (zeros when dense clicks are off)."""
        maps = self.click_map(points)
        if not self.dense_clicks:
            maps = torch.zeros_like(maps)
        return self.dense(maps)


# -- mask decoder (SAM's two-way transformer) --------------------------------------------------------------
class TwoWayBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_pe: bool):
        super().__init__()
        self.skip_first_pe = skip_first_pe
        self.self_attn = Attention(dim, heads)
        self.cross_t2i = Attention(dim, heads, internal=dim // 2)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        self.cross_i2t = Attention(dim, heads, internal=dim // 2)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norms[0](queries)
        queries = self.norms[1](queries + self.cross_t2i(queries + query_pe, keys + key_pe, keys))
        queries = self.norms[2](queries + self.mlp(queries))
        keys = self.norms[3](keys + self.cross_i2t(keys + key_pe, queries + query_pe, queries))
        return queries, keys


class MaskDecoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int):
        super().__init__()
        self.obj_score_token = nn.Embedding(1, dim)
        self.mask_token = nn.Embedding(1, dim)
        self.blocks = nn.ModuleList(TwoWayBlock(dim, heads, mlp_dim, i == 0) for i in range(depth))
        self.final_attn = Attention(dim, heads, internal=dim // 2)
        self.final_norm = nn.LayerNorm(dim)
        self.up1 = nn.ConvTranspose2d(dim, dim // 4, 2, stride=2)
        self.up1_norm = LayerNorm2d(dim // 4)
        self.up2 = nn.ConvTranspose2d(dim // 4, dim // 8, 2, stride=2)
        self.hyper = MLP(dim, dim, dim // 8, 3)
        self.obj_score = MLP(dim, dim, 1, 3)
        self.pointer = MLP(dim, dim, dim, 3)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, high_res: list[torch.Tensor]):
        """image N x d x g x g (prompt's dense embedding added), image_pe g*g x d, sparse N x P x d,
        high_res [N x d/8 x 4g x 4g, N x d/4 x 2g x 2g] -> mask logits N x 4g x 4g, object score N,
        mask-token output N x d."""
        n, d, g, _ = image.shape
        out_tokens = torch.cat([self.obj_score_token.weight, self.mask_token.weight], 0).expand(n, -1, -1)
        tokens = torch.cat([out_tokens, sparse], 1)
        keys = image.flatten(2).transpose(1, 2)
        key_pe = image_pe[None].expand(n, -1, -1)
        queries = tokens
        for block in self.blocks:
            queries, keys = block(queries, keys, tokens, key_pe)
        queries = self.final_norm(queries + self.final_attn(queries + tokens, keys + key_pe, keys))
        obj_token, mask_token = queries[:, 0], queries[:, 1]
        x = keys.transpose(1, 2).reshape(n, d, g, g)
        x = F.gelu(self.up1_norm(self.up1(x) + high_res[1]))
        x = F.gelu(self.up2(x) + high_res[0])                                     # N x d/8 x 4g x 4g
        masks = torch.einsum("nc,nchw->nhw", self.hyper(mask_token), x)
        return masks, self.obj_score(obj_token)[:, 0], mask_token


# -- memory ---------------------------------------------------------------------------------------------
class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pw1, self.pw2 = nn.Conv2d(dim, 4 * dim, 1), nn.Conv2d(4 * dim, dim, 1)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.pw2(F.gelu(self.pw1(self.norm(self.dw(x)))))


class MemoryEncoder(nn.Module):
    def __init__(self, dim: int, mem_dim: int, image_size: int, grid: int):
        super().__init__()
        layers, c, size = [], 1, image_size
        while size > grid:  # SAM 2's mask downsampler: stride-2 convs to the grid
            out = min(dim, c * 4)
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), LayerNorm2d(out), nn.GELU()]
            c, size = out, size // 2
        self.downsample = nn.Sequential(*layers, nn.Conv2d(c, dim, 1))
        self.pix_proj = nn.Conv2d(dim, dim, 1)
        self.fuser = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.out_proj = nn.Conv2d(dim, mem_dim, 1)

    def forward(self, frame_embedding: torch.Tensor, mask_prob: torch.Tensor) -> torch.Tensor:
        """frame_embedding N x d x g x g (unconditioned), mask_prob N x H x W in [0, 1] -> N x g*g x mem_dim."""
        m = self.downsample((mask_prob * 20.0 - 10.0)[:, None])
        x = self.out_proj(self.fuser(self.pix_proj(frame_embedding) + m))
        return x.flatten(2).transpose(1, 2)


class MemoryAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mem_dim: int, mlp_dim: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads, kv_dim=mem_dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))

    def forward(self, x, pos, memory, memory_pos, memory_mask):
        h = self.norm1(x)
        x = x + self.self_attn(h + pos, h + pos, h)
        h = self.norm2(x)
        x = x + self.cross_attn(h, memory + memory_pos, memory, memory_mask)
        return x + self.mlp(self.norm3(x))


class MemoryAttention(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, mem_dim: int, mlp_dim: int):
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(dim, heads, mem_dim, mlp_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, pos, memory, memory_pos, memory_mask):
        x = x + 0.1 * pos  # SAM 2 adds the position encoding to its input, scaled by 0.1
        for layer in self.layers:
            x = layer(x, pos, memory, memory_pos, memory_mask)
        return self.norm(x)


# -- the model -------------------------------------------------------------------------------------------
class SAM2(SafetensorsModule):
    def __init__(self, image_size: int, patch_size: int, vit_dim: int, vit_depth: int, vit_heads: int, dim: int,
                 decoder_depth: int, decoder_heads: int, decoder_mlp: int, mem_dim: int, memory_layers: int,
                 memory_heads: int, memory_mlp: int, num_recent: int, max_pointers: int, use_memory: bool = True,
                 dense_clicks: bool = True, click_sigma: float = 1.0):
        super().__init__()
        if dim % mem_dim:
            raise ValueError(f"SAM2: dim {dim} must be a multiple of mem_dim {mem_dim} (pointers split into tokens)")
        self.image_size, self.use_memory = image_size, use_memory
        self.num_recent, self.max_pointers, self.mem_dim = num_recent, max_pointers, mem_dim
        self.image_encoder = ImageEncoder(image_size, patch_size, vit_dim, vit_depth, vit_heads, dim)
        self.grid = self.image_encoder.grid
        self.prompt_encoder = PromptEncoder(dim, image_size, self.grid, dense_clicks, click_sigma)
        self.mask_decoder = MaskDecoder(dim, decoder_depth, decoder_heads, decoder_mlp)
        self.memory_encoder = MemoryEncoder(dim, mem_dim, image_size, self.grid)
        self.memory_attention = MemoryAttention(dim, memory_layers, memory_heads, mem_dim, memory_mlp)
        self.memory_pe = RandomFourierPE(mem_dim)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.maskmem_tpos = nn.Parameter(torch.zeros(num_recent + 1, mem_dim))    # 0: a prompted frame, k: k frames back
        self.pointer_tpos = nn.Embedding(max_pointers + 1, mem_dim)
        self.no_obj_pointer = nn.Parameter(torch.zeros(dim))
        for p in (self.no_mem_embed, self.maskmem_tpos, self.no_obj_pointer):
            nn.init.trunc_normal_(p, std=0.02)

    # The frames of a clip go through the image encoder together (once each); the rest is a loop over
    # time, batched over videos: which earlier frames are in each video's memory bank differs
    # between videos (where the prompts are), so the bank is every earlier frame with a key mask.
    def forward_video(self, frames: torch.Tensor, points: torch.Tensor, hard_gate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """frames N x T x 3 x H x W, points N x T x P x 3 (row, column, label; label -1 pads) ->
        mask logits N x T x H x W and object-score logits N x T. `hard_gate`: a frame whose object
        score is negative gets an empty mask in memory and the no-object pointer (SAM 2's inference;
        training feeds the mask's sigmoid and gates only the pointer)."""
        n, t_len = frames.shape[:2]
        emb, high = self.image_encoder(frames.flatten(0, 1))
        emb = emb.view(n, t_len, *emb.shape[1:])
        high = [h.view(n, t_len, *h.shape[1:]) for h in high]
        image_pe = self.prompt_encoder.pe.grid(self.grid)
        mem_pe = self.memory_pe.grid(self.grid)
        prompted = (points[..., 2] != PAD).any(-1)                                  # N x T
        memories, pointers, masks, scores = [], [], [], []
        for t in range(t_len):
            x = emb[:, t].flatten(2).transpose(1, 2)                                # N x g*g x d
            if self.use_memory and t > 0:
                x = self._attend_memory(x, image_pe, mem_pe, memories, pointers, prompted, t)
            else:
                x = x + self.no_mem_embed
            pts = points[:, t] if self.use_memory else points[:, :t + 1].flatten(1, 2)  # no memory: stale clicks
            image = x.transpose(1, 2).reshape_as(emb[:, t]) + self.prompt_encoder.dense_embedding(pts)
            logits, score, token = self.mask_decoder(image, image_pe, self.prompt_encoder.sparse(pts),
                                                     [high[0][:, t], high[1][:, t]])
            if logits.shape[-1] != self.image_size:  # SAM: masks at 4x the grid, upsampled to the image bilinearly
                logits = F.interpolate(logits[:, None], size=self.image_size, mode="bilinear", align_corners=False)[:, 0]
            masks.append(logits)
            scores.append(score)
            if self.use_memory:
                visible = (score > 0).float()
                prob = torch.sigmoid(logits) * (visible[:, None, None] if hard_gate else 1.0)
                memories.append(self.memory_encoder(emb[:, t], prob))
                ptr = self.mask_decoder.pointer(token)
                pointers.append(visible[:, None] * ptr + (1 - visible[:, None]) * self.no_obj_pointer)
        return torch.stack(masks, 1), torch.stack(scores, 1)

    def _attend_memory(self, x, image_pe, mem_pe, memories, pointers, prompted, t):
        n, hw = x.shape[:2]
        included, slot = memory_bank(prompted, t, self.num_recent)
        spatial_pos = [mem_pe[None] + self.maskmem_tpos[slot[:, s]][:, None, :] for s in range(t)]
        spatial_ok = [included[:, s, None].expand(n, hw) for s in range(t)]
        ptr_tokens, ptr_pos, ptr_ok = [], [], []
        for s in range(max(0, t - self.max_pointers), t):
            k = pointers[s].shape[-1] // self.mem_dim
            ptr_tokens.append(pointers[s].view(n, k, self.mem_dim))
            ptr_pos.append(self.pointer_tpos.weight[t - s].expand(n, k, -1))
            ptr_ok.append(torch.ones(n, k, dtype=torch.bool, device=x.device))
        memory = torch.cat(memories[:t] + ptr_tokens, 1)
        memory_pos = torch.cat(spatial_pos + ptr_pos, 1)
        memory_ok = torch.cat(spatial_ok + ptr_ok, 1)
        return self.memory_attention(x, image_pe[None].expand(n, -1, -1), memory, memory_pos, memory_ok)


def memory_bank(prompted: torch.Tensor, t: int, num_recent: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of frames 0..t-1 are in frame t's memory bank, and each one's temporal slot, per video
    (prompted: N x T bool). The bank holds every prompted frame (slot 0) and the `num_recent` latest
    unprompted frames before t (slot k for the k-th latest), as SAM 2's does."""
    prior = prompted[:, :t]
    unprompted = (~prior).long()
    rank = unprompted.flip(1).cumsum(1).flip(1)          # rank of each unprompted frame counting back from t-1
    included = prior | (unprompted.bool() & (rank <= num_recent))
    slot = torch.where(prior, torch.zeros_like(rank), rank.clamp(max=num_recent))  # excluded frames: any valid slot
    return included, slot
