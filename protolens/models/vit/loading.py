"""Building vision transformers (timm, or Hugging Face via ``hf.py``) and loading their weights safely.

Weights are read from ``.safetensors`` (safetensors) or ``.pth``/``.pt``/``.bin`` with
``torch.load(weights_only=True)``: arbitrary pickled objects are refused. Original DINO/DINOv2
checkpoints (``teacher``/``backbone.`` prefixes, Meta's key names) are converted by timm's own filter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from protolens.core.errors import CheckpointError
from protolens.models.vit.families import family_info
from protolens.models.vit.hf import CLIP_MEAN, CLIP_STD, is_hf_name, load_hf
from protolens.models.vit.preprocess import IMAGENET_MEAN, IMAGENET_STD

_MODELS: dict[tuple[str, str, str], nn.Module] = {}
_LOCK = threading.Lock()
_CONTAINER_KEYS = ("teacher", "student", "model", "state_dict", "module")
_PREFIXES = ("module.", "backbone.", "encoder.")


@dataclass(frozen=True)
class ViTSpec:
    """Facts about a ViT read off the built model.

    ``num_prefix_tokens`` = 1 CLS + ``num_registers``; the token layout is [CLS, registers, patches].
    """

    name: str
    patch_size: int
    num_prefix_tokens: int
    num_registers: int
    num_heads: int
    num_blocks: int
    embed_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_size: int


def vit_spec(model: nn.Module) -> ViTSpec:
    """Read a :class:`ViTSpec` off a timm ViT or a Hugging Face DINOv2 / CLIP vision model."""
    info = family_info(model)
    if info.family == "timm":
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        name = cfg.get("architecture", type(model).__name__) + (f".{cfg['tag']}" if cfg.get("tag") else "")
        mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
    else:
        config = model.config
        name = getattr(config, "_name_or_path", "") or config.model_type
        mean, std = (CLIP_MEAN, CLIP_STD) if info.family == "hf-clip" else (IMAGENET_MEAN, IMAGENET_STD)
        size = int(getattr(config, "image_size", 224))
    return ViTSpec(name=name, patch_size=info.patch_size, num_prefix_tokens=info.num_prefix,
                   num_registers=info.num_registers, num_heads=info.num_heads, num_blocks=info.num_blocks,
                   embed_dim=info.embed_dim, mean=mean, std=std, default_size=size)


def create_vit(name: str) -> nn.Module:
    """Build timm model ``name`` with random weights, no classifier head, any input size (multiple of the patch).

    Raises :class:`CheckpointError` for a name timm does not know.
    """
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
    except RuntimeError as exc:
        raise CheckpointError(f"unknown model {name!r}: {exc}") from None
    except TypeError as exc:  # e.g. dynamic_img_size on a model that is not a plain ViT
        raise CheckpointError(f"{name!r} is not a vision transformer protolens can read ({exc})") from None


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(state, dict):
            inner = next((state[k] for k in _CONTAINER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in state.values()):
                state = inner
                continue
        break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    cleaned = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, on the CPU.

    Raises
    ------
    CheckpointError
        Unreadable file, unsafe pickle (refused by ``weights_only=True``), or not a state dict.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return _unwrap(load_file(str(path), device="cpu"), path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch/safetensors raise many types for bad files
        raise CheckpointError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    return _unwrap(state, path)


def load_weights_into(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into a timm ViT, converting original DINO/DINOv2 layouts.

    Classifier-head entries are ignored (features only). Raises :class:`CheckpointError` if any
    backbone weight is missing or has the wrong shape (weights of another architecture).
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = read_state_dict(path)
    try:
        state = checkpoint_filter_fn(state, model)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: does not look like weights of a ViT ({exc})") from None
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm.")) or k in model.state_dict()}
    expected = model.state_dict()
    wrong = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in state]
    if wrong or missing:
        detail = (f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(expected[wrong[0]].shape)}"
                  if wrong else f"{len(missing)} weights missing, e.g. {missing[0]}")
        name = vit_spec(model).name
        raise CheckpointError(f"{path}: these weights do not fit {name} ({detail})")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)


def load_vit(name: str, weights: str | Path | None, device: str = "cpu", *, weights_key: str | None = None) -> nn.Module:
    """A ready (eval mode, on ``device``) timm ViT, built once per (name, weights, device) and reused.

    Parameters
    ----------
    name : str
        timm model name (``vit_small_patch14_dinov2.lvd142m``) or Hugging Face id (``facebook/dinov2-small``;
        known ids: see ``hf.HF_CONFIGS``).
    weights : path or None
        Checkpoint file or (HF) snapshot folder; None builds random weights (tests and benchmarks only).
    device : str
        Torch device string.
    weights_key : str, optional
        Identity of the weights for the reuse cache (their sha256); defaults to the path.

    Raises
    ------
    CheckpointError
        Unknown model, unreadable or mismatching weights.
    """
    key = (name, weights_key or (str(Path(weights).resolve()) if weights else "random"), device)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random-init models (tests, benchmarks) are the same in every process
        if is_hf_name(name):
            model = load_hf(name, weights)
        else:
            model = create_vit(name)
            if weights is not None:
                load_weights_into(model, weights)
    model = model.eval().to(device)
    with _LOCK:
        return _MODELS.setdefault(key, model)


def forget_models() -> None:
    """Drop every cached model (frees memory; the next :func:`load_vit` rebuilds)."""
    with _LOCK:
        _MODELS.clear()
