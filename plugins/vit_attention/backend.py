"""ViT attention backend: CLS -> patch self-attention of the last block (DINO, arXiv 2104.14294, Sec. 4.2).

Steps
-----
1. Resize the photo so its longer side is ``long_side`` (aspect kept), both sides multiples of the
   patch size: a non-square (rows, cols) grid.
2. One forward pass; the last block's queries and keys are captured and the CLS row of
   ``softmax(q k^T / sqrt(d))`` recomputed (correct under fused attention, METHODS.md §6).
3. Drop CLS and register tokens (DINOv2 with registers, arXiv 2309.16588), reshape to (heads, rows, cols).
4. Pick one head or fuse the heads (mean or max), min-max normalise to [0, 1].

Extras: ``head_attention`` (heads, rows, cols) float32 raw attention probabilities of each head;
``attention`` (rows, cols) float32 raw fused attention (for mass thresholds).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from protolens.core.errors import ParamError, WeightsNotFoundError
from protolens.core.jobs import Progress
from protolens.core.thresholds import otsu_threshold
from protolens.core.types import BackendResult, Heatmap
from protolens.models import api
from protolens.models.api import Backend, RunContext


def min_max(values: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(values - min) / (max - min + eps), float32; constant maps become 0."""
    values = np.asarray(values, dtype=np.float32)
    low = values.min(axis=(-2, -1), keepdims=True)
    high = values.max(axis=(-2, -1), keepdims=True)
    return ((values - low) / (high - low + eps)).astype(np.float32)


def fuse_heads(head_maps: np.ndarray, head: int, fusion: str) -> np.ndarray:
    """Select head ``head`` of (heads, rows, cols), or fuse all heads by ``fusion`` ("mean"/"max") if head < 0.

    Raises :class:`ParamError` if ``head`` is not a head of this model.
    """
    heads = head_maps.shape[0]
    if head >= heads:
        raise ParamError(f"--head {head}: this model has {heads} heads (0..{heads - 1}, or -1 to fuse)")
    if head >= 0:
        return head_maps[head]
    return head_maps.max(axis=0) if fusion == "max" else head_maps.mean(axis=0)


class ViTAttention(Backend):
    """CLS attention heatmaps from timm DINO/DINOv2 ViTs."""

    def _weights(self, params: Any, ctx: RunContext) -> tuple[Any, str, str]:
        """(path or None for random init, weights id, sha256)."""
        spec = self.manifest.weights_for(params)
        try:
            path = api.resolve_weights(spec, ctx.weights_path)
        except WeightsNotFoundError:
            if ctx.weights_path is None and ctx.allow_random_weights:
                return None, f"{params.model}:random-init", "none"
            raise
        return path, (spec.name if spec else params.model), api.weights_sha256(path)

    def weights_identity(self, params: Any, ctx: RunContext) -> tuple[str, str]:
        _, weights_id, sha = self._weights(params, ctx)
        return weights_id, sha

    def prepare(self, params: Any, ctx: RunContext) -> None:
        self._model(params, ctx)

    def _model(self, params: Any, ctx: RunContext) -> torch.nn.Module:
        path, _, sha = self._weights(params, ctx)
        return api.load_vit(params.model, path, ctx.device, weights_key=sha if path is not None else None)

    def run(self, image: np.ndarray, params: Any, ctx: RunContext) -> Generator[Progress, None, BackendResult]:
        yield Progress(0.0, f"loading {params.model}")
        model = self._model(params, ctx)
        spec = api.vit_spec(model)
        if params.head >= spec.num_heads:
            fuse_heads(np.zeros((spec.num_heads, 1, 1), np.float32), params.head, params.head_fusion)
        ctx.cancel.raise_if_set()
        x, (rows, cols) = api.preprocess(image, params.long_side, spec.patch_size, spec.mean, spec.std)
        yield Progress(0.2, f"attention on a {rows}x{cols} patch grid")
        tensor = torch.from_numpy(x).to(ctx.device)
        with api.autocast(ctx.device, ctx.dtype):
            cls_rows = api.capture_cls_attention(model, tensor, blocks=(-1,))
        ctx.cancel.raise_if_set()
        attention = next(iter(cls_rows.values()))[0]  # (heads, tokens)
        head_maps = attention[:, spec.num_prefix_tokens:].reshape(spec.num_heads, rows, cols).cpu().numpy()
        fused = fuse_heads(head_maps, params.head, params.head_fusion)
        heat = min_max(fused)
        yield Progress(1.0, "done")
        return BackendResult(
            Heatmap(heat, image.shape[:2]), suggested_threshold=otsu_threshold(heat),
            extras={"head_attention": head_maps.astype(np.float32), "attention": fused.astype(np.float32)},
            info={"grid": [rows, cols], "patch_size": spec.patch_size, "block": spec.num_blocks - 1,
                  "registers": spec.num_registers, "heads": spec.num_heads, "device": ctx.device,
                  "dtype": ctx.dtype},
        )
