"""Helpers for the model-layer tests: tiny real timm ViTs with random (but non-trivial) weights."""

from __future__ import annotations

import pytest


def make_tiny_vit(patch_size: int = 14, reg_tokens: int = 0, *, embed_dim: int = 48, depth: int = 2,
                  num_heads: int = 3, img_size: int | None = None, seed: int = 0, sharpen: bool = True):
    """A real ``timm`` VisionTransformer, tiny, random weights, eval mode, any input size.

    ``sharpen`` re-draws the qkv projections with a larger spread: timm's default init (std 0.02)
    gives almost uniform attention, against which a wrong scale or a swapped q/k would go unnoticed.
    """
    import torch
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=img_size or 4 * patch_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
        num_heads=num_heads, num_classes=0, dynamic_img_size=True, reg_tokens=reg_tokens,
        no_embed_class=reg_tokens > 0,
    )
    if sharpen:
        with torch.no_grad():
            for block in model.blocks:
                block.attn.qkv.weight.normal_(0.0, 0.35)
                block.attn.qkv.bias.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture
def tiny_vit():
    """The :func:`make_tiny_vit` factory."""
    return make_tiny_vit
