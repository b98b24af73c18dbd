"""Building vision transformers (timm, or Hugging Face via ``hf.py``) and loading their weights safely.

Weights are read from ``.safetensors`` (safetensors) or ``.pth``/``.pt``/``.bin`` with
``torch.load(weights_only=True)``: arbitrary pickled objects are refused. Original DINO/DINOv2
checkpoints (``teacher``/``backbone.`` prefixes, Meta's key names) are converted by timm's own filter.

Loaded models are reused (one per (name, weights, device)) from a bounded least-recently-used cache, so that
stepping through the checkpoints of a run never holds them all. Each device has its own budget, read from
the environment when this module is imported and again by :func:`forget_models`:

``PROTOLENS_MAX_MODELS``
    Most models kept per device (default 3; at least 1).
``PROTOLENS_MAX_MODEL_BYTES``
    Most parameter + buffer bytes kept per device (default ``4GiB``); an integer, optionally with a unit
    (``500MB``, ``8GiB``). The model just loaded is always kept, even when larger.

An evicted model is dropped (it lives on only where a caller still holds it); if it was on a CUDA device,
that device's cached blocks are released with ``torch.cuda.empty_cache()``.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from protolens.core.cache import MemoryCache
from protolens.core.errors import CheckpointError
from protolens.models.vit.families import family_info
from protolens.models.vit.hf import CLIP_MEAN, CLIP_STD, is_hf_name, load_hf
from protolens.models.vit.preprocess import IMAGENET_MEAN, IMAGENET_STD

DEFAULT_MAX_MODELS = 3
DEFAULT_MAX_MODEL_BYTES = 4 * 1024**3
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}
_log = logging.getLogger(__name__)

ModelKey = tuple[str, str, str]  # (name, weights identity, device)
_MODELS: dict[str, MemoryCache[nn.Module]] = {}  # per device: (name, weights, device) -> model, LRU
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
    load_fitting_state(model, state, path, vit_spec(model).name)


def load_fitting_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """Load ``state`` into ``model`` strictly, ignoring entries the model does not have.

    Raises :class:`CheckpointError` ``"<path>: these weights do not fit <what> (...)"`` naming the first tensor
    of the wrong shape, else the count of missing weights, before anything is loaded.
    """
    expected = model.state_dict()
    wrong = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in state]
    if wrong or missing:
        detail = (f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(expected[wrong[0]].shape)}"
                  if wrong else f"{len(missing)} weights missing, e.g. {missing[0]}")
        raise CheckpointError(f"{path}: these weights do not fit {what} ({detail})")
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
        cached = _device_cache(device).get(key)
    if cached is not None:
        return cached
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
        cache = _device_cache(device)
        cached = cache.get(key)
        if cached is not None:  # another thread built it meanwhile: keep one
            return cached
        evicted = [old for _, old in cache.put(key, model)]
    _release(evicted)
    return model


def model_bytes(model: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (a parameter shared by two layers counted once)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size in bytes: {text!r} (examples: 4294967296, 500MB, 8GiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def model_cache_limits() -> tuple[int, int]:
    """(most models, most bytes) kept per device: ``PROTOLENS_MAX_MODELS`` and ``PROTOLENS_MAX_MODEL_BYTES``.

    Unset or invalid values give the defaults (3 models, 4 GiB); an invalid value is logged.
    """
    count, size = DEFAULT_MAX_MODELS, DEFAULT_MAX_MODEL_BYTES
    if raw := os.environ.get("PROTOLENS_MAX_MODELS", "").strip():
        try:
            count = max(int(raw), 1)
        except ValueError:
            _log.warning("PROTOLENS_MAX_MODELS=%r is not an integer; keeping %d models", raw, count)
    if raw := os.environ.get("PROTOLENS_MAX_MODEL_BYTES", "").strip():
        try:
            size = _parse_bytes(raw)
        except ValueError as exc:
            _log.warning("PROTOLENS_MAX_MODEL_BYTES: %s; keeping %d bytes", exc, size)
    return count, size


_LIMITS = model_cache_limits()


def _device_cache(device: str) -> MemoryCache[nn.Module]:
    """The model cache of ``device`` (call with ``_LOCK`` held)."""
    if device not in _MODELS:
        _MODELS[device] = MemoryCache(_LIMITS[0], max_bytes=_LIMITS[1], size_of=model_bytes)
    return _MODELS[device]


def cached_models() -> list[ModelKey]:
    """Keys (name, weights identity, device) of the models held now (not in recency order)."""
    with _LOCK:
        caches = list(_MODELS.values())
    return [key for cache in caches for key in cache.keys()]


def _cuda_devices(models: list[nn.Module]) -> set[torch.device]:
    devices = set()
    for model in models:
        tensor = next(iter((*model.parameters(), *model.buffers())), None)
        if tensor is not None and tensor.device.type == "cuda":
            devices.add(tensor.device)
    return devices


def _release(models: list[nn.Module]) -> None:
    """Empty ``models`` (it must hold the caller's last references) and free the CUDA blocks they held."""
    devices = _cuda_devices(models)
    models.clear()
    if devices:
        gc.collect()  # modules with hooks can sit in reference cycles
        for device in devices:
            with torch.cuda.device(device):
                torch.cuda.empty_cache()


def forget_models() -> None:
    """Drop every cached model (frees memory; the next :func:`load_vit` rebuilds) and re-read the limits."""
    global _LIMITS
    with _LOCK:
        dropped = [model for cache in _MODELS.values() for model in cache.clear()]
        _MODELS.clear()
        _LIMITS = model_cache_limits()
    _release(dropped)
