"""The narrow ViT of prototype-guided zero-shot segmentation (arXiv 2512.19957, step 4).

Input: the frozen CLS tokens of a quadrat's crops, (batch, N, D) with N = rows x cols in row-major order
(row = y, col = x, origin top-left), plus a fixed 2-D sin-cos position embedding over the crop grid (no CLS
token). Pre-norm transformer blocks, a final LayerNorm, then a token mixing ``Linear(N -> K)`` applied across
tokens: each of the K output rows is a learned mix of the N tokens, trained to reconstruct the K prototypes
(step 5). The attention each crop *receives*, averaged over blocks and heads, is the crop score (step 6).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class NarrowViTConfig:
    """Architecture of a narrow ViT.

    Attributes
    ----------
    grid : (int, int)
        Crop grid (rows, cols); N = rows x cols tokens.
    prototypes : int
        K, rows of the output (the number of prototypes).
    token_dim : int
        D, width of the input tokens and of the output rows (the backbone's CLS width, 768 for ViT-B).
    width : int
        Width of the blocks; 0 = ``token_dim`` (the paper). Another width adds input and output projections.
    depth, heads : int
        Blocks (6) and attention heads (12) (step 4).
    mlp_ratio : float
        MLP hidden width / block width (4).
    """

    grid: tuple[int, int]
    prototypes: int
    token_dim: int = 768
    width: int = 0
    depth: int = 6
    heads: int = 12
    mlp_ratio: float = 4.0

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def block_width(self) -> int:
        return self.width or self.token_dim

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "grid": list(self.grid)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NarrowViTConfig:
        return cls(**{**data, "grid": tuple(data["grid"])})


def sincos_position_embedding(rows: int, cols: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding of a (rows, cols) grid, (rows*cols, dim) float32, row-major.

    The first half of the channels encodes the row (y), the second half the column (x); each half is
    ``[sin(p * w), cos(p * w)]`` with ``w_i = 10000^(-i / (dim/4))`` (MAE, arXiv 2111.06377). Used by step 3
    of arXiv 2512.19957. Raises ``ValueError`` if ``dim`` is not a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"position embedding width {dim} must be a multiple of 4")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.to(torch.float64)[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.cat([encode(ys.reshape(-1)), encode(xs.reshape(-1))], dim=1).to(torch.float32)


class Attention(nn.Module):
    """Multi-head self-attention with qkv bias; returns its (batch, heads, N, N) weights when asked."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, width * 3, bias=True)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, keep: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if not keep:
            out = F.scaled_dot_product_attention(q, k, v)
            weights = None
        else:
            weights = ((q.float() @ k.float().transpose(-2, -1)) / math.sqrt(c // self.heads)).softmax(dim=-1)
            out = weights.to(v.dtype) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c)), weights


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)); GELU, no dropout."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, keep: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(self.norm1(x), keep)
        x = x + attended
        return x + self.mlp(self.norm2(x)), weights


class NarrowViT(nn.Module):
    """Tokens (batch, N, D) -> reconstructed prototypes (batch, K, D) (arXiv 2512.19957, step 4).

    Parameters
    ----------
    config : NarrowViTConfig
        Grid, K, widths, depth and heads.
    """

    def __init__(self, config: NarrowViTConfig) -> None:
        super().__init__()
        self.config = config
        width = config.block_width
        self.register_buffer("pos_embed", sincos_position_embedding(*config.grid, width), persistent=False)
        self.embed = nn.Linear(config.token_dim, width) if width != config.token_dim else nn.Identity()
        self.blocks = nn.ModuleList(Block(width, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mix = nn.Linear(config.tokens, config.prototypes)
        self.out = nn.Linear(width, config.token_dim) if width != config.token_dim else nn.Identity()

    def _check(self, tokens: torch.Tensor) -> None:
        expected = (self.config.tokens, self.config.token_dim)
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != expected:
            raise ValueError(f"tokens are {tuple(tokens.shape)}, expected (batch, {expected[0]}, {expected[1]})")

    def encode(self, tokens: torch.Tensor, keep: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Blocks and final norm: (batch, N, width), plus each block's attention weights when ``keep``."""
        self._check(tokens)
        x = self.embed(tokens) + self.pos_embed.to(tokens.dtype)
        weights = []
        for block in self.blocks:
            x, w = block(x, keep)
            if w is not None:
                weights.append(w)
        return self.norm(x), weights

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Z_hat (batch, K, D): transpose to (batch, width, N), mix tokens with Linear(N -> K), transpose back."""
        x, _ = self.encode(tokens)
        return self.out(self.mix(x.transpose(1, 2)).transpose(1, 2))

    @torch.inference_mode()
    def received_attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention each token receives, (batch, N) float32, raw (not normalised).

        The attention matrices of all blocks are averaged, then the heads, giving (N, N) (rows = queries); the sum
        over the query axis is what each token receives (arXiv 2512.19957, step 6). Computed with an explicit
        softmax (fused attention exposes no weights, METHODS.md §6). The block mean is a running sum, so one
        block's (batch, heads, N, N) weights exist at a time (about 230 MB at N = 1536, not 1.4 GB).
        """
        self._check(tokens)
        x = self.embed(tokens) + self.pos_embed.to(tokens.dtype)
        total: torch.Tensor | None = None
        for block in self.blocks:
            x, weights = block(x, keep=True)
            heads = weights.float().mean(dim=1)  # heads -> (batch, N, N)
            total = heads if total is None else total + heads
        assert total is not None
        return (total / len(self.blocks)).sum(dim=1)
