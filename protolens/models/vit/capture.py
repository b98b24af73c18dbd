"""Capturing self-attention from vision transformers that use fused attention kernels.

timm (and Hugging Face) compute attention with ``scaled_dot_product_attention``, so the softmax matrix
never exists as a tensor and hooks on ``attn_drop`` see nothing (METHODS.md §6). We hook the
projections instead, keep the (normalised, scaled) queries and keys of the blocks asked for, and
recompute ``softmax(q k^T / sqrt(d))`` ourselves: exactly what the fused kernel computes.

Token layout (timm ViTs): [CLS, registers (0 or 4), patches in row-major order (rows, cols)].
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import torch
from torch import nn


def _timm_blocks(model: nn.Module) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(blocks[0], "attn") or not hasattr(blocks[0].attn, "qkv"):
        raise TypeError(f"{type(model).__name__} is not a timm VisionTransformer with fused qkv attention")
    return list(blocks)


class QKCapture:
    """Context manager that records queries and keys of chosen blocks during forward passes.

    Parameters
    ----------
    model : torch.nn.Module
        A timm ``VisionTransformer`` (blocks with ``attn.qkv``, ``attn.q_norm``, ``attn.k_norm``).
    blocks : sequence of int, optional
        Block indices (negative counts from the end); default all blocks.

    After a forward inside the context, ``captured[i]`` is ``(q, k)`` for block ``i`` (non-negative
    index), each (batch, heads, tokens, head_dim); ``q`` is already multiplied by ``head_dim ** -0.5``.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[int] | None = None) -> None:
        all_blocks = _timm_blocks(model)
        count = len(all_blocks)
        indices = range(count) if blocks is None else [b % count for b in blocks]
        self._targets = {i: all_blocks[i].attn for i in indices}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _hook(self, index: int, attn: nn.Module):  # noqa: ANN202 - torch hook signature
        def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            batch, tokens, _ = output.shape
            qkv = output.reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
            self.captured[index] = (q * attn.scale, k)

        return hook

    def __enter__(self) -> QKCapture:
        self.captured.clear()
        for index, attn in self._targets.items():
            self._handles.append(attn.qkv.register_forward_hook(self._hook(index, attn)))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def attention_rows(q: torch.Tensor, k: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
    """Softmax attention of the query tokens ``rows`` (default all) to every key, in float32.

    ``q`` (pre-scaled) and ``k`` are (batch, heads, tokens, head_dim). Returns (batch, heads, len(rows), tokens);
    each row sums to 1.
    """
    q = q if rows is None else q[:, :, rows]
    logits = torch.matmul(q.float(), k.float().transpose(-2, -1))
    return torch.softmax(logits, dim=-1)


@torch.inference_mode()
def capture_cls_attention(model: nn.Module, x: torch.Tensor, blocks: Sequence[int] = (-1,)) -> dict[int, torch.Tensor]:
    """CLS-token attention of chosen blocks in one forward pass (DINO, arXiv 2104.14294, Sec. 4.2).

    Parameters
    ----------
    model : torch.nn.Module
        A timm ViT in eval mode.
    x : torch.Tensor
        (batch, 3, rows*patch, cols*patch) normalised input.
    blocks : sequence of int
        Block indices; -1 is the last block.

    Returns
    -------
    dict of int to torch.Tensor
        For each block (non-negative index): (batch, heads, tokens) float32, the softmax attention of the CLS
        query to all tokens (CLS, registers, patches); it sums to 1 over tokens.
    """
    with QKCapture(model, blocks) as capture:
        model.forward_features(x)
    return {i: attention_rows(q, k, slice(0, 1))[:, :, 0] for i, (q, k) in capture.captured.items()}


@torch.inference_mode()
def capture_attentions(model: nn.Module, x: torch.Tensor, blocks: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
    """Full softmax attention matrices of chosen blocks (default all) in one forward pass.

    Returns, per block, (batch, heads, tokens, tokens) float32 with rows (queries) summing to 1.
    Memory: blocks x batch x heads x tokens^2 x 4 bytes.
    """
    with QKCapture(model, blocks) as capture:
        model.forward_features(x)
    return {i: attention_rows(q, k) for i, (q, k) in capture.captured.items()}
