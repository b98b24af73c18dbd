"""Route attention (bi-level routing attention, BiFormer: Zhu et al., CVPR 2023, arXiv 2303.08810 §3.2).

LDVC (arXiv 2403.08426 §3.3, "local consensus self-attention") replaces the decoder's self-attention over patch
features by route attention. LDVC has no public code; the steps below follow BiFormer §3.2 (Eqs. 3-6):

1. Project the token grid ``x`` (B, H, W, C) to ``q, k, v = x W_q, x W_k, x W_v`` (one fused linear layer).
2. Split the (H, W) grid into windows ("regions"): BiFormer uses S x S windows of (H/S, W/S) tokens. When S does
   not divide the grid we (our choice) use windows of ``ceil(H/S) x ceil(W/S)`` tokens, ``ceil(H / ceil(H/S))``
   of them per column (so no window is pure padding), pad the grid at the bottom/right and mask padded keys.
3. Region-level queries and keys ``Q_r, K_r`` (n_r, C): the mean of ``q`` and ``k`` over each window's real tokens
   (BiFormer Eq. 3 averages over all tokens; padding is excluded here).
4. Region affinity ``A_r = Q_r K_r^T`` (n_r, n_r) and routing index ``I_r = topk(A_r, k)`` (Eq. 4): each window
   keeps its k most related windows (by the full-width affinity, shared by all heads, as in BiFormer).
5. Gather the keys and values of those k windows (Eq. 5) and run multi-head scaled dot-product attention of every
   query of the window over them (Eq. 6), then merge heads and apply the output projection ``W_o``.

BiFormer adds a local context enhancement term ``LCE(V)`` (a 5x5 depth-wise convolution on v, Eq. 6); it is
left out here (LDVC does not mention it), so that with ``top_k`` = all windows route attention is exactly full
multi-head attention (a test checks this against ``F.scaled_dot_product_attention``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from protolens.core.errors import ParamError

__all__ = ["RouteAttention", "full_attention", "window_layout"]


def window_layout(rows: int, cols: int, windows: int) -> tuple[int, int, int, int]:
    """Window size and count for a (rows, cols) token grid split into about ``windows`` per side.

    Returns
    -------
    tuple of int
        ``(win_rows, win_cols, n_rows, n_cols)``: each window is ``win_rows x win_cols`` tokens
        (``ceil(rows / windows)``, likewise cols), ``n_rows x n_cols`` windows cover the grid (padded at the
        bottom and right by less than one window). Equals BiFormer's S x S split when S divides the grid.
    """
    if rows < 1 or cols < 1 or windows < 1:
        raise ParamError(f"route attention needs a non-empty grid and >= 1 window per side (got {rows}x{cols}, "
                         f"{windows})")
    win_r, win_c = math.ceil(rows / windows), math.ceil(cols / windows)
    return win_r, win_c, math.ceil(rows / win_r), math.ceil(cols / win_c)


def _to_windows(t: torch.Tensor, win_r: int, win_c: int, n_r: int, n_c: int) -> torch.Tensor:
    """(B, n_r * win_r, n_c * win_c, C) -> (B, n_r * n_c, win_r * win_c, C), windows row-major."""
    b, _, _, c = t.shape
    t = t.reshape(b, n_r, win_r, n_c, win_c, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(b, n_r * n_c, win_r * win_c, c)


def _from_windows(t: torch.Tensor, win_r: int, win_c: int, n_r: int, n_c: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`."""
    b, _, _, c = t.shape
    t = t.reshape(b, n_r, n_c, win_r, win_c, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(b, n_r * win_r, n_c * win_c, c)


class RouteAttention(nn.Module):
    """Multi-head route attention over a token grid (module docstring: the steps and their sources).

    Parameters
    ----------
    dim : int
        Channels C; divisible by ``heads``.
    heads : int
        Attention heads (head size C / heads, scale ``(C / heads) ** -0.5``).
    windows : int
        Windows per side S (BiFormer's S; 7 at 224 px in BiFormer).
    top_k : int
        Windows each window attends to (clamped to the number of windows); ``top_k >= S * S`` is full attention.

    Forward: ``x`` (B, H, W, C) float -> (B, H, W, C).
    """

    def __init__(self, dim: int, heads: int, windows: int, top_k: int) -> None:
        super().__init__()
        if dim % heads:
            raise ParamError(f"route attention: dim {dim} is not divisible by {heads} heads")
        if top_k < 1:
            raise ParamError(f"route attention: top_k must be >= 1 (got {top_k})")
        self.dim, self.heads, self.windows, self.top_k = dim, heads, windows, top_k
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, rows, cols, c = x.shape
        win_r, win_c, n_r, n_c = window_layout(rows, cols, self.windows)
        pad_r, pad_c = n_r * win_r - rows, n_c * win_c - cols
        qkv = self.qkv(x)
        if pad_r or pad_c:
            qkv = F.pad(qkv, (0, 0, 0, pad_c, 0, pad_r))  # zero rows/cols at the bottom/right
        qkv = _to_windows(qkv, win_r, win_c, n_r, n_c)  # (B, n_w, t, 3C)
        q, k, v = qkv.chunk(3, dim=-1)
        n_w, t = q.shape[1], q.shape[2]
        valid = torch.zeros(n_r * win_r, n_c * win_c, 1, device=x.device, dtype=torch.bool)
        valid[:rows, :cols] = True
        valid = _to_windows(valid[None], win_r, win_c, n_r, n_c)[0, :, :, 0]  # (n_w, t)
        counts = valid.sum(dim=1).clamp(min=1).to(q.dtype)[None, :, None]
        q_r, k_r = q.sum(dim=2) / counts, k.sum(dim=2) / counts  # padded tokens are zero: real-token means
        top_k = min(self.top_k, n_w)
        route = (q_r @ k_r.transpose(1, 2)).topk(top_k, dim=-1).indices  # (B, n_w, k)
        gather = route.reshape(b, n_w * top_k, 1, 1).expand(b, n_w * top_k, t, c)
        k_g = torch.gather(k, 1, gather).reshape(b, n_w, top_k * t, c)
        v_g = torch.gather(v, 1, gather).reshape(b, n_w, top_k * t, c)
        mask = None
        if pad_r or pad_c:
            mask = valid[route].reshape(b, 1, n_w, 1, top_k * t)  # (B, heads, n_w, queries, keys)
        d = c // self.heads

        def heads(z: torch.Tensor) -> torch.Tensor:  # (B, n_w, L, C) -> (B, heads * n_w, L, d): 4-D for SDPA's
            # fused CPU/GPU kernels (5-D inputs fall back to the math path, which materialises the scores)
            return z.reshape(b, n_w, z.shape[2], self.heads, d).permute(0, 3, 1, 2, 4).reshape(b, -1, z.shape[2], d)

        if mask is not None:
            mask = mask.expand(b, self.heads, n_w, 1, top_k * t).reshape(b, self.heads * n_w, 1, top_k * t)
        out = F.scaled_dot_product_attention(heads(q), heads(k_g), heads(v_g), attn_mask=mask)
        out = out.reshape(b, self.heads, n_w, t, d).permute(0, 2, 3, 1, 4).reshape(b, n_w, t, c)
        out = _from_windows(out, win_r, win_c, n_r, n_c)[:, :rows, :cols]
        return self.proj(out)


def full_attention(module: RouteAttention, x: torch.Tensor) -> torch.Tensor:
    """Plain multi-head self-attention over all H*W tokens with ``module``'s weights (the reference route
    attention reduces to when every window is kept; also the "full" side of the benchmark).

    ``x`` (B, H, W, C) -> (B, H, W, C).
    """
    b, rows, cols, c = x.shape
    q, k, v = module.qkv(x.reshape(b, rows * cols, c)).chunk(3, dim=-1)
    d = c // module.heads
    q, k, v = (z.reshape(b, rows * cols, module.heads, d).transpose(1, 2) for z in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, rows, cols, c)
    return module.proj(out)
