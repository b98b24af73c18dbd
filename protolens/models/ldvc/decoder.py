"""LDVC text adapter and local consensus transformer decoder (arXiv 2403.08426 §3.2-3.3).

What the paper specifies (no public code; from the paper's text and figures): the class embeddings of the CLIP text
tower are updated with the global image feature by a *text adapter* before the decoder; the *local consensus
transformer decoder* (LCTD) updates the patch features, with the class embeddings as anchors in cross-attention
(queries = patch features, keys / values = class embeddings: vision features are steered toward the language
side, not the other way round as in SegViT/ZegCLIP), self-attention replaced by route attention (BiFormer), and
segmentation logits from the similarity of the refined patch features and the class embeddings. Two decoder
blocks are enough per the paper's ablation.

What we assume (marked "assumption" below): the adapter form ``t' = t + alpha * MLP([t ; g])`` with a learnable
scalar alpha; pre-norm residual blocks (route self-attention, cross-attention, FFN with GELU, ratio 4); a linear
map of the CLIP features to the decoder width and back, with the back projection zero-initialised and added to
the CLIP patch feature, so that an untrained decoder gives CLIP's own cosine logits; a learnable logit scale
(log-parametrised, initial 1/0.07 as CLIP, clamped at 100).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from protolens.models.ldvc.route_attention import RouteAttention

__all__ = ["CrossAttention", "DecoderLayer", "LocalConsensusDecoder", "TextAdapter"]


class TextAdapter(nn.Module):
    """Fuses the global image feature into the class embeddings (LDVC §3.2).

    ``t' = t + alpha * MLP([t ; g])``: ``MLP`` = Linear(2D, hidden) -> GELU -> Linear(hidden, D), alpha a
    learnable scalar (initial ``alpha``). The paper states only that the global image feature is fused into the
    class embeddings by an adapter; the concatenation MLP and the residual scale are our assumption.

    Forward: ``texts`` (n, D), ``global_feature`` (B, D) -> (B, n, D) float.
    """

    def __init__(self, dim: int, hidden: int | None = None, alpha: float = 0.1) -> None:
        super().__init__()
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, texts: torch.Tensor, global_feature: torch.Tensor) -> torch.Tensor:
        b, n = global_feature.shape[0], texts.shape[0]
        t = texts.unsqueeze(0).expand(b, n, -1)
        g = global_feature.unsqueeze(1).expand(b, n, -1)
        return t + self.alpha * self.mlp(torch.cat([t, g], dim=-1))


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries = patch tokens (B, L, C), keys / values = class anchors (B, n, C)
    (LDVC §3.3: class embeddings as anchors). Returns (B, L, C)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        d = c // self.heads
        q = self.q(x).reshape(b, length, self.heads, d).transpose(1, 2)
        k, v = (z.reshape(b, -1, self.heads, d).transpose(1, 2) for z in self.kv(anchors).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, length, c))


class DecoderLayer(nn.Module):
    """One LCTD block (pre-norm; assumption): ``x += RouteAttn(LN x)``; ``x += CrossAttn(LN x, anchors)``;
    ``x += FFN(LN x)``. ``x`` (B, H, W, C), ``anchors`` (B, n, C) -> (B, H, W, C)."""

    def __init__(self, dim: int, heads: int, windows: int, top_k: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = RouteAttention(dim, heads, windows, top_k)
        self.cross_attn = CrossAttention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        b, rows, cols, c = x.shape
        x = x + self.self_attn(self.norm1(x))
        flat = x.reshape(b, rows * cols, c)
        flat = flat + self.cross_attn(self.norm2(flat), anchors)
        flat = flat + self.ffn(self.norm3(flat))
        return flat.reshape(b, rows, cols, c)


class LocalConsensusDecoder(nn.Module):
    """The local consensus transformer decoder (LDVC §3.3) with the cosine-logit head.

    Parameters
    ----------
    embed_dim : int
        D, the CLIP joint embedding width (512 for ViT-B/16) of the patch features and class embeddings.
    dim : int
        Decoder width C.
    layers, heads, windows, top_k : int
        Blocks (LDVC: 2), attention heads, route-attention windows per side and windows kept per window.

    Forward
    -------
    patches : (B, H, W, D) float, CLIP patch features (after ``ln_post`` and ``proj``).
    classes : (B, n, D) float, adapted class embeddings (:class:`TextAdapter`).
    Returns logits (B, n, H, W) float32: ``scale * cos(patch + P_out(decoder(P_in patch)), class)``.
    """

    def __init__(self, embed_dim: int, dim: int = 256, layers: int = 2, heads: int = 8, windows: int = 7,
                 top_k: int = 8) -> None:
        super().__init__()
        self.patch_in = nn.Linear(embed_dim, dim)
        self.class_in = nn.Linear(embed_dim, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, windows, top_k) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.patch_out = nn.Linear(dim, embed_dim)
        nn.init.zeros_(self.patch_out.weight)
        nn.init.zeros_(self.patch_out.bias)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, patches: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        x = self.patch_in(patches)
        anchors = self.class_in(classes)
        for layer in self.layers:
            x = layer(x, anchors)
        refined = patches + self.patch_out(self.norm(x))
        p = F.normalize(refined.float(), dim=-1)
        t = F.normalize(classes.float(), dim=-1)
        scale = self.logit_scale.float().exp().clamp(max=100.0)
        return scale * torch.einsum("bhwd,bnd->bnhw", p, t)
