"""Model families whose self-attention protolens can capture: where the queries and keys are, and the
token layout, for timm ViTs and Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel`` /
``CLIPVisionModel`` (transformers 4.x and 5.x module layouts).

An attention site is one block's attention module with a way to turn the output of the projection the
hook sits on into (q, k), each (batch, heads, tokens, head_dim), with q already scaled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

QKFromOutputs = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class AttentionSite:
    """One block's attention: modules to hook (by name) and how to build (q, k) from their outputs."""

    hooks: dict[str, nn.Module]
    build_qk: QKFromOutputs


@dataclass(frozen=True)
class FamilyInfo:
    """Token layout and geometry of a model: ``num_prefix`` = CLS + registers, then row-major patches."""

    family: str
    patch_size: int
    num_prefix: int
    num_registers: int
    num_heads: int
    num_blocks: int
    embed_dim: int


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, dim = x.shape
    return x.reshape(batch, tokens, heads, dim // heads).transpose(1, 2)


def _timm_sites(model: nn.Module) -> list[AttentionSite]:
    sites = []
    for block in model.blocks:
        attn = block.attn

        def build(outputs: dict[str, torch.Tensor], attn: nn.Module = attn) -> tuple[torch.Tensor, torch.Tensor]:
            qkv = outputs["qkv"]
            batch, tokens, _ = qkv.shape
            qkv = qkv.reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            return attn.q_norm(qkv[0]) * attn.scale, attn.k_norm(qkv[1])

        sites.append(AttentionSite({"qkv": attn.qkv}, build))
    return sites


def _hf_attention_modules(model: nn.Module) -> list[nn.Module]:
    found = []
    for module in model.modules():
        if isinstance(getattr(module, "q_proj", None), nn.Linear) and isinstance(getattr(module, "k_proj", None),
                                                                                  nn.Linear):
            found.append(module)
        elif isinstance(getattr(module, "query", None), nn.Linear) and isinstance(getattr(module, "key", None),
                                                                                    nn.Linear):
            found.append(module)
    return found


def _hf_heads(module: nn.Module) -> tuple[int, float]:
    heads = getattr(module, "num_heads", None) or getattr(module, "num_attention_heads", None)
    if heads is None:
        heads = module.config.num_attention_heads
    head_dim = getattr(module, "head_dim", None) or getattr(module, "attention_head_size", None)
    q = module.q_proj if hasattr(module, "q_proj") else module.query
    head_dim = head_dim or q.out_features // heads
    scale = getattr(module, "scaling", None) or getattr(module, "scale", None) or head_dim ** -0.5
    return int(heads), float(scale)


def _hf_sites(model: nn.Module) -> list[AttentionSite]:
    sites = []
    for module in _hf_attention_modules(model):
        heads, scale = _hf_heads(module)
        q_mod, k_mod = (module.q_proj, module.k_proj) if hasattr(module, "q_proj") else (module.query, module.key)

        def build(outputs: dict[str, torch.Tensor], heads: int = heads,
                  scale: float = scale) -> tuple[torch.Tensor, torch.Tensor]:
            return _split_heads(outputs["q"], heads) * scale, _split_heads(outputs["k"], heads)

        sites.append(AttentionSite({"q": q_mod, "k": k_mod}, build))
    return sites


def family_of(model: nn.Module) -> str:
    """``"timm"``, ``"hf-dinov2"`` or ``"hf-clip"``; raises ``TypeError`` for anything else."""
    if hasattr(model, "blocks") and hasattr(model, "patch_embed") and hasattr(model.blocks[0], "attn"):
        return "timm"
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "")
    if model_type.startswith("dinov2"):
        return "hf-dinov2"
    if model_type.startswith("clip"):
        return "hf-clip"
    raise TypeError(f"{type(model).__name__} is not a supported vision transformer (timm ViT, HF DINOv2 or CLIP)")


def attention_sites(model: nn.Module) -> list[AttentionSite]:
    """One :class:`AttentionSite` per block, in order."""
    return _timm_sites(model) if family_of(model) == "timm" else _hf_sites(model)


def family_info(model: nn.Module) -> FamilyInfo:
    """Token layout and geometry of a supported model."""
    family = family_of(model)
    if family == "timm":
        patch = model.patch_embed.patch_size
        return FamilyInfo(family, int(patch[0] if isinstance(patch, tuple) else patch), int(model.num_prefix_tokens),
                          int(getattr(model, "num_reg_tokens", 0)), int(model.blocks[0].attn.num_heads),
                          len(model.blocks), int(model.embed_dim))
    config = model.config
    config = getattr(config, "vision_config", config)
    registers = int(getattr(config, "num_register_tokens", 0) or 0)
    return FamilyInfo(family, int(config.patch_size), 1 + registers, registers, int(config.num_attention_heads),
                      int(config.num_hidden_layers), int(config.hidden_size))


def forward_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Final token features (batch, tokens, dim) after the model's last norm, any input size (patch multiples).

    timm: ``forward_features``; HF DINOv2: ``last_hidden_state`` (already layer-normed); HF CLIP:
    ``post_layernorm(last_hidden_state)`` with position embeddings interpolated.
    """
    family = family_of(model)
    if family == "timm":
        return model.forward_features(x)
    if family == "hf-clip":
        out = model(pixel_values=x, interpolate_pos_encoding=True)
        post = getattr(model, "post_layernorm", None) or getattr(getattr(model, "vision_model", None),
                                                                   "post_layernorm", None)
        return post(out.last_hidden_state) if post is not None else out.last_hidden_state
    return model(pixel_values=x).last_hidden_state
